"""The archive writer: a consumer of the log (consumer `archive`) that copies every stored
event, byte for byte, into zstd-compressed JSON-lines files per source and hour of
receivedAt: `<source slug>/<YYYY>/<MM>/<DD>/<HH>-<n>.jsonl.zst`.

Files and position move together, by *checkpoints*. Each source has at most one open
file, holding its events in log order; an event of another hour closes it and opens the
next. A checkpoint (when a file is `file_max_age_s` old, or `checkpoint_events` were
read) finishes every open file (end of zstd frame, fsync), publishes them (rename), and
then, in one store transaction, lists them in the manifest and moves the archive's
position past their events. Hence:

* a listed file is always complete, and every event up to the archive position is in
  exactly one listed file;
* per source, listed files cover disjoint, increasing seq ranges, so reading them in
  `first_seq` order yields the source's events in log order;
* after a crash the writer starts again from its position: staging files are wiped, and
  files published but not yet listed (named in the `archive_publishing` setting before
  publication) are deleted, then written again.

With TRACKYARD_ARCHIVE_RETENTION_DAYS set, the writer also deletes files past that age
(archive/retention.py), where it applies log retention.

zstd level 3 compresses 4x faster than gzip -6 at the same ratio (limits.md §5).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson
import zstandard

from trackyard.archive.retention import (
    RetentionPolicy,
    drop_expired_segments,
    expire_archive_files,
    finish_expiring,
)
from trackyard.archive.storage import SUFFIX, ArchiveStorage
from trackyard.spec import now_ms
from trackyard.store import Store, StoredEvent
from trackyard.store.archive import ARCHIVE_CONSUMER, ArchiveFile

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
PUBLISHING_SETTING = "archive_publishing"
IDLE_S = 0.5
RETENTION_EVERY_S = 60.0


@dataclass
class ArchiveOptions:
    file_max_age_s: float = 120.0
    checkpoint_events: int = 500_000
    level: int = 3
    page_size: int = 5000
    lease_s: float = 15.0  # another process may take over this long after a crash
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    archive_retention_days: float | None = None  # None: archive files are kept forever

    @property
    def lease_ms(self) -> int:
        return int(self.lease_s * 1000)


class LostLease(Exception):
    """Another process took the archive lease: this writer's unlisted work is abandoned."""


def hour_of(received_ms: int) -> int:
    return received_ms - received_ms % HOUR_MS


def file_key(slug: str, hour_ms: int, part: int) -> str:
    hour = datetime.fromtimestamp(hour_ms / 1000, UTC)
    return f"{slug}/{hour:%Y/%m/%d/%H}-{part}{SUFFIX}"


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _HashingSink:
    """The file under the compressor: hashes the compressed bytes on their way to disk."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


class _OpenFile:
    def __init__(self, staged: Path, source_id: int, hour_ms: int, part: int, key: str, level: int) -> None:
        self.staged = staged
        self.source_id = source_id
        self.hour_ms = hour_ms
        self.part = part
        self.key = key
        self.handle = open(staged, "wb")  # noqa: SIM115 - closed by finish() or abandon()
        self.sink = _HashingSink(self.handle)
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)  # readers detect damage
        self.compressor = compressor.stream_writer(self.sink, closefd=False)
        self.opened = time.monotonic()
        self.first_seq = 0
        self.last_seq = 0
        self.min_received_ms = 0
        self.max_received_ms = 0
        self.count = 0

    def write(self, events: list[StoredEvent]) -> None:
        self.compressor.write(b"".join(_line(event.body) for event in events))
        received = [event.received_ms for event in events]
        if not self.count:
            self.first_seq = events[0].seq
            self.min_received_ms = self.max_received_ms = received[0]
        self.last_seq = events[-1].seq
        self.min_received_ms = min(self.min_received_ms, *received)
        self.max_received_ms = max(self.max_received_ms, *received)
        self.count += len(events)

    def finish(self) -> ArchiveFile:
        """End the zstd frame and make the bytes durable; the file may then be published."""
        self.compressor.close()
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return ArchiveFile(
            source_id=self.source_id,
            hour_ms=self.hour_ms,
            part=self.part,
            key=self.key,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            min_received_ms=self.min_received_ms,
            max_received_ms=self.max_received_ms,
            count=self.count,
            size=self.sink.size,
            sha256=self.sink.sha256.hexdigest(),
        )

    def abandon(self) -> None:
        self.handle.close()
        self.staged.unlink(missing_ok=True)


def _line(body: bytes) -> bytes:
    """One JSON line: stored bodies are compact JSON; anything with a raw newline is re-encoded."""
    if b"\n" in body:
        body = orjson.dumps(orjson.loads(body))
    return body + b"\n"


class ArchiveWriter:
    """Blocking work (`step`, `checkpoint`) runs on a thread; `run` drives it on the event loop."""

    def __init__(
        self,
        store: Store,
        storage: ArchiveStorage,
        options: ArchiveOptions | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.options = options or ArchiveOptions()
        self.owner = owner or new_owner()
        self.read_upto = 0
        self.position = 0
        self._open: dict[int, _OpenFile] = {}
        self._finished: list[tuple[_OpenFile, ArchiveFile]] = []
        self._parts: dict[tuple[int, int], int] = {}
        self._slugs: dict[int, str] = {}
        self._since_checkpoint = 0
        self._lease_renewed = 0.0
        self._retention_ran = 0.0
        self._recovered = False

    # -- lease and recovery --------------------------------------------------------------
    def hold_lease(self) -> bool:
        """Take or renew the archive lease (at most every sixth of its length); False while
        another process archives."""
        if self._recovered and time.monotonic() - self._lease_renewed < self.options.lease_s / 6:
            return True
        if self.store.acquire(ARCHIVE_CONSUMER, self.owner, self.options.lease_ms) is None:
            if self._recovered:
                self._abandon()
            return False
        self._lease_renewed = time.monotonic()
        if not self._recovered:
            self._recover()
        return True

    def _recover(self) -> None:
        """Undo what an interrupted writer left: staging files, files published but not
        listed, and files unlisted by archive retention but not yet deleted."""
        self.storage.clear_staging()
        publishing = orjson.loads(self.store.get_setting(PUBLISHING_SETTING) or "[]")
        if publishing:
            listed = self.store.archive_file_keys(publishing)
            for key in publishing:
                if key not in listed:
                    self.storage.delete(key)
                    log.info("archive: removed %s, published but never listed (interrupted checkpoint)", key)
            self.store.set_setting(PUBLISHING_SETTING, "[]")
        finish_expiring(self.store, self.storage)
        self.position = self.read_upto = self.store.get_position(ARCHIVE_CONSUMER) or 0
        self._parts.clear()
        self._recovered = True

    def _abandon(self) -> None:
        for handle in [*self._open.values(), *(opened for opened, _ in self._finished)]:
            handle.abandon()
        self._open.clear()
        self._finished.clear()
        self._since_checkpoint = 0
        self._recovered = False

    def release(self) -> None:
        self.store.release(ARCHIVE_CONSUMER, self.owner)

    # -- writing ---------------------------------------------------------------------------
    def step(self) -> int:
        """Archive one page of the log; checkpoint when due. Returns how many events were read."""
        page = self.store.read_log(self.read_upto, self.options.page_size)
        for source_id, events in _runs_by_source(page):
            self._write(source_id, events)
        if page:
            self.read_upto = page[-1].seq
            self._since_checkpoint += len(page)
        if self._checkpoint_due():
            self.checkpoint()
        return len(page)

    def _write(self, source_id: int, events: list[StoredEvent]) -> None:
        start = 0
        for index in range(1, len(events) + 1):
            if index == len(events) or hour_of(events[index].received_ms) != hour_of(
                events[start].received_ms
            ):
                self._file_for(source_id, hour_of(events[start].received_ms)).write(events[start:index])
                start = index

    def _file_for(self, source_id: int, hour_ms: int) -> _OpenFile:
        current = self._open.get(source_id)
        if current is not None and current.hour_ms == hour_ms:
            return current
        if current is not None:
            self._finished.append((current, current.finish()))
        part = self._next_part(source_id, hour_ms)
        key = file_key(self._slug(source_id), hour_ms, part)
        opened = _OpenFile(self.storage.staging_path(), source_id, hour_ms, part, key, self.options.level)
        self._open[source_id] = opened
        return opened

    def _next_part(self, source_id: int, hour_ms: int) -> int:
        key = (source_id, hour_ms)
        if key not in self._parts:
            self._parts[key] = self.store.last_archive_part(source_id, hour_ms)
        self._parts[key] += 1
        return self._parts[key]

    def _slug(self, source_id: int) -> str:
        if source_id not in self._slugs:
            self._slugs = {source.id: source.slug for source in self.store.list_sources()}
        return self._slugs.get(source_id, f"source-{source_id}")

    def _checkpoint_due(self) -> bool:
        if self._since_checkpoint >= self.options.checkpoint_events:
            return True
        oldest = min(
            [f.opened for f in self._open.values()] + [f.opened for f, _ in self._finished], default=None
        )
        return oldest is not None and time.monotonic() - oldest >= self.options.file_max_age_s

    def checkpoint(self) -> list[ArchiveFile]:
        """Finish, publish and list every file, and move the position: see the module docstring."""
        if self.read_upto == self.position:
            return []
        if self.store.acquire(ARCHIVE_CONSUMER, self.owner, self.options.lease_ms) is None:
            self._abandon()
            raise LostLease("the archive lease was taken by another process; its writer takes over")
        self._lease_renewed = time.monotonic()
        for opened in self._open.values():
            self._finished.append((opened, opened.finish()))
        self._open.clear()
        finished, self._finished = self._finished, []
        files = [done for _, done in finished]
        if files:
            self.store.set_setting(PUBLISHING_SETTING, orjson.dumps([f.key for f in files]).decode())
            for opened, done in finished:
                self.storage.publish(opened.staged, done.key)
        if not self.store.publish_archive_files(files, self.read_upto, self.owner, now_ms()):
            self._recovered = False
            raise LostLease("the archive lease was taken by another process during a checkpoint")
        if files:
            self.store.set_setting(PUBLISHING_SETTING, "[]")
        self.position = self.read_upto
        self._since_checkpoint = 0
        return files

    def catch_up(self) -> int:
        """Archive everything in the log now and checkpoint it (for tests, the benchmark, the CLI)."""
        if not self.hold_lease():
            raise LostLease("another process holds the archive lease")
        total = 0
        while read := self.step():
            total += read
        self.checkpoint()
        return total

    # -- the background role ---------------------------------------------------------------
    async def run(self) -> None:
        """Archive for as long as this process holds the lease; apply log retention after checkpoints."""
        try:
            while True:
                try:
                    busy = await asyncio.to_thread(self._tick)
                except LostLease as exc:
                    log.warning("archive: %s", exc)
                    busy = False
                except Exception:
                    log.exception("archive: writing failed; retrying")
                    await asyncio.to_thread(self._abandon)
                    busy = False
                if not busy:
                    await asyncio.sleep(IDLE_S)
        finally:
            await asyncio.shield(asyncio.to_thread(self._stop))

    def _tick(self) -> bool:
        if not self.hold_lease():
            return False
        before = self.position
        read = self.step()
        if self.position != before or time.monotonic() - self._retention_ran >= RETENTION_EVERY_S:
            self._retention_ran = time.monotonic()
            self.apply_retention(now_ms())
        return read == self.options.page_size

    def apply_retention(self, now: int) -> None:
        """Drop the log segments the log retention allows, then the archive files older than
        `archive_retention_days` (when set)."""
        for segment in drop_expired_segments(self.store, self.options.retention, now):
            log.info(
                "log retention: dropped segment %d (seq %d-%d)",
                segment.id,
                segment.first_seq,
                segment.last_seq,
            )
        if self.options.archive_retention_days is not None:
            for expired in expire_archive_files(
                self.store, self.storage, self.options.archive_retention_days, now
            ):
                log.info(
                    "archive retention: deleted %s (seq %d-%d)",
                    expired.key,
                    expired.first_seq,
                    expired.last_seq,
                )

    def _stop(self) -> None:
        """On a clean shutdown, publish what is written so far and hand the lease back."""
        try:
            if self._recovered:
                self.checkpoint()
                self.release()
        except Exception:
            log.exception("archive: final checkpoint failed; the next start writes those events again")
            self._abandon()


def _runs_by_source(page: list[StoredEvent]) -> list[tuple[int, list[StoredEvent]]]:
    """The page split into each source's events, keeping log order within a source."""
    by_source: dict[int, list[StoredEvent]] = {}
    for event in page:
        by_source.setdefault(event.source_id, []).append(event)
    return list(by_source.items())
