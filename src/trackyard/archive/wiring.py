"""From a process's configuration to the archive's parts: the storage, the writer (which
`trackyard serve` runs in its background child) and the replay scheduler (which it runs
itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackyard.archive.replay import ReplayScheduler
from trackyard.archive.retention import RetentionPolicy
from trackyard.archive.storage import ArchiveStorage, FileSystemStorage, S3Storage
from trackyard.archive.writer import ArchiveOptions, ArchiveWriter, new_owner
from trackyard.delivery.worker import WorkerOptions
from trackyard.store import Store

if TYPE_CHECKING:
    from trackyard.config import Config


def archive_storage(config: Config) -> ArchiveStorage:
    """A bucket when TRACKYARD_ARCHIVE_URL is an s3:// URL, else the archive directory."""
    if config.archive_url:
        return S3Storage(config.archive_url, config.data_dir / "archive-staging", config.archive_s3_endpoint)
    return FileSystemStorage(config.archive_path)


def archive_options(config: Config) -> ArchiveOptions:
    return ArchiveOptions(
        file_max_age_s=config.archive_file_max_age_s,
        checkpoint_events=config.archive_file_max_events,
        lease_s=config.archive_lease_s,
        archive_retention_days=config.archive_retention_days,
        retention=RetentionPolicy(
            hours=config.log_retention_hours,
            keep_segments=config.log_retention_segments,
            dedupe_window_s=config.dedupe_window_s,
        ),
    )


def archive_writer(config: Config, store: Store, owner: str) -> ArchiveWriter:
    return ArchiveWriter(store, archive_storage(config), archive_options(config), owner)


def replay_scheduler(config: Config, store: Store, options: WorkerOptions) -> ReplayScheduler:
    return ReplayScheduler(store, archive_storage(config), new_owner(), options, config.replay_lease_s)
