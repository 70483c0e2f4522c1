"""Log retention: drop whole sealed segments that the archive and every consumer have passed.

A segment is dropped only when all of these hold, oldest first, stopping at the first
that must stay (so the log remains one contiguous range):

* it is sealed, and at least `keep_segments` newer sealed segments remain;
* the archive position and every consumer position (destinations, replays, the
  warehouse loader…) are at or past its last seq;
* its newest event is older than `hours` — never less than the dedupe window, because
  the embedded store rebuilds that window from the log at start-up.

Events of a dropped segment remain in the archive, from where replays read them.

The archive itself is kept forever unless TRACKYARD_ARCHIVE_RETENTION_DAYS is set: then
files whose newest event is older than that are removed, first from the manifest (so a
listed file is never missing), then from the storage. The keys being removed are named
in the `archive_expiring` setting first, so a writer interrupted between the two steps
deletes the objects when it starts again (`finish_expiring`).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from trackyard.archive.storage import ArchiveStorage
from trackyard.store import Segment, Store
from trackyard.store.archive import ARCHIVE_CONSUMER, ArchiveFile

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
EXPIRING_SETTING = "archive_expiring"


@dataclass(frozen=True)
class RetentionPolicy:
    hours: float = 168.0
    keep_segments: int = 2
    dedupe_window_s: int = 24 * 3600

    def horizon_ms(self, now_ms: int) -> int:
        """Segments whose newest event is older than this may go."""
        keep_ms = max(self.hours * HOUR_MS, self.dedupe_window_s * 1000)
        return now_ms - int(keep_ms)


def droppable_segments(store: Store, policy: RetentionPolicy, now_ms: int) -> list[Segment]:
    archived = store.get_position(ARCHIVE_CONSUMER)
    floor = store.min_consumer_position()
    if archived is None or floor is None:
        return []
    passed = min(archived, floor)
    horizon = policy.horizon_ms(now_ms)
    sealed = [segment for segment in store.segments() if segment.sealed]
    candidates = sealed[: max(0, len(sealed) - policy.keep_segments)]
    droppable: list[Segment] = []
    for segment in candidates:
        if segment.last_seq > passed or (segment.max_received_ms or 0) >= horizon:
            break
        droppable.append(segment)
    return droppable


def drop_expired_segments(store: Store, policy: RetentionPolicy, now_ms: int) -> list[Segment]:
    """Drop what the policy allows; returns the dropped segments."""
    dropped = droppable_segments(store, policy, now_ms)
    for segment in dropped:
        store.drop_segment(segment.id)
    return dropped


def expire_archive_files(
    store: Store, storage: ArchiveStorage, days: float, now_ms: int
) -> list[ArchiveFile]:
    """Remove the archive files whose newest event was received more than `days` ago;
    returns them."""
    horizon = now_ms - int(days * DAY_MS)
    expired: list[ArchiveFile] = []
    while batch := store.expired_archive_files(horizon):
        store.set_setting(EXPIRING_SETTING, orjson.dumps([f.key for f in batch]).decode())
        store.unlist_archive_files([f.id for f in batch])
        for listed in batch:
            storage.delete(listed.key)
        store.set_setting(EXPIRING_SETTING, "[]")
        expired.extend(batch)
    return expired


def finish_expiring(store: Store, storage: ArchiveStorage) -> None:
    """Delete the objects of an interrupted expiry whose manifest rows are already gone."""
    expiring: list[str] = orjson.loads(store.get_setting(EXPIRING_SETTING) or "[]")
    if expiring:
        listed = store.archive_file_keys(expiring)
        for key in expiring:
            if key not in listed:
                storage.delete(key)
        store.set_setting(EXPIRING_SETTING, "[]")
