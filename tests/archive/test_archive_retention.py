"""Archive retention (TRACKYARD_ARCHIVE_RETENTION_DAYS): old files leave the manifest, then the storage."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.archive.helpers import archive_all, fill, history_start
from tests.store.conftest import Engine
from trackyard.archive.history import History, Range
from trackyard.archive.retention import EXPIRING_SETTING
from trackyard.archive.service import verify_archive
from trackyard.archive.storage import FileSystemStorage
from trackyard.archive.writer import ArchiveOptions, ArchiveWriter
from trackyard.config import Config
from trackyard.spec import now_ms


def test_files_older_than_the_policy_and_their_rows_go_the_rest_stays_and_verify_is_clean(
    engine: Engine, tmp_path: Path
):
    store = engine.open()
    web, ios = store.create_source("web", "k1"), store.create_source("ios", "k2")
    old = fill(store, [web.id, ios.id], 400, history_start(days_ago=40), 45_000, prefix="old")  # 5 h
    new = fill(store, [web.id, ios.id], 400, history_start(days_ago=2), 45_000, prefix="new")
    storage = FileSystemStorage(tmp_path / "archive")
    writer = ArchiveWriter(store, storage, ArchiveOptions(archive_retention_days=30))
    writer.catch_up()

    listed = store.list_archive_files()
    newest_old = max(made.received_ms for made in old)
    old_files = [f for f in listed if f.max_received_ms <= newest_old]
    new_files = [f for f in listed if f.max_received_ms > newest_old]
    assert len(old_files) >= 10 and len(new_files) >= 10  # 2 sources x 5 hours each
    storage.delete(old_files[0].key)  # already gone from the storage: tolerated
    ArchiveWriter(store, storage).apply_retention(now_ms())  # no policy: kept forever
    assert store.list_archive_files() == listed

    writer.apply_retention(now_ms())

    assert store.list_archive_files() == new_files
    assert store.archive_file_keys([f.key for f in old_files]) == set()
    assert sorted(storage.published()) == sorted(f.key for f in new_files)
    assert store.get_setting(EXPIRING_SETTING) == "[]"
    report = verify_archive(store, storage)
    assert report["ok"], report
    assert (report["files"], report["events"], report["problems"], report["unlisted"], report["gaps"]) == (
        len(new_files),
        len(new),
        [],
        [],
        [],
    )
    head = store.head()
    history = History(store, storage, Range(web.id, log_from=head, last_seq=head))
    kept = [orjson.loads(stored.body)["messageId"] for stored in history.events(0)]
    assert kept == [made.message_id for made in new if made.source_id == web.id]


def test_an_interrupted_expiry_is_finished_when_the_writer_starts(engine: Engine, tmp_path: Path):
    store = engine.open()
    web = store.create_source("web", "k1")
    fill(store, [web.id], 100, history_start(days_ago=40), 60_000)
    storage = FileSystemStorage(tmp_path / "archive")
    archive_all(store, storage.root)
    unlisted, kept = store.list_archive_files()[:2]
    store.set_setting(EXPIRING_SETTING, orjson.dumps([unlisted.key, kept.key]).decode())
    store.unlist_archive_files([unlisted.id])  # the writer stopped here

    archive_all(store, storage.root)  # a new writer recovers first

    assert unlisted.key not in set(storage.published())
    assert kept.key in set(storage.published())  # still listed, so still there
    assert store.get_setting(EXPIRING_SETTING) == "[]"
    assert verify_archive(store, storage)["ok"]


def test_the_policy_is_unset_by_default_and_read_from_the_environment():
    assert Config.from_env({}).archive_retention_days is None
    assert Config.from_env({"TRACKYARD_ARCHIVE_RETENTION_DAYS": "400"}).archive_retention_days == 400.0
    with pytest.raises(ValueError, match="TRACKYARD_ARCHIVE_RETENTION_DAYS must be a positive"):
        Config.from_env({"TRACKYARD_ARCHIVE_RETENTION_DAYS": "0"})
