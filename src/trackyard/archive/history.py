"""One source's history over a range, read from the archive and then from the log.

Positions. Events of the log carry their seq. An archive file holds some of its source's
events between `first_seq` and `last_seq` without their seqs (its lines are the stored
JSON, nothing added), so line `i` of a file of `count` lines is given the position
`last_seq - count + 1 + i`: increasing, inside the file's range, and equal to the true seq
at the file's last line. A position therefore says exactly where to resume, in a file or
in the log, and the boundary between the two needs no overlap check:

* the archive part is every listed file of the source up to `log_from` (the archive's
  position when the replay was created), less the files archive retention removes
  meanwhile (TRACKYARD_ARCHIVE_RETENTION_DAYS): those are skipped;
* the log part is the source's events after `log_from` up to `last_seq`, which the
  replay's consumer position keeps in the log until it has read them.

Order: log order (commit order) throughout, which is receivedAt order up to the few
milliseconds a commit takes.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import orjson
import zstandard

from trackyard.archive.storage import ArchiveStorage
from trackyard.spec import parse_ms
from trackyard.store import Store, StoredEvent
from trackyard.store.archive import ArchiveFile

READ_CHUNK = 1 << 20
FILES_PER_QUERY = 200
_RECEIVED = b'"receivedAt":"'


@dataclass(frozen=True)
class Range:
    source_id: int
    log_from: int
    last_seq: int
    since_ms: int | None = None
    until_ms: int | None = None

    def holds(self, received_ms: int) -> bool:
        return (self.since_ms is None or received_ms >= self.since_ms) and (
            self.until_ms is None or received_ms <= self.until_ms
        )


def file_lines(storage: ArchiveStorage, key: str) -> Iterator[bytes]:
    """The lines of an archive file, decompressed as a stream (memory stays flat)."""
    with storage.open(key) as handle:
        for lines in compressed_chunks(handle):
            yield from lines


def compressed_lines(handle: BinaryIO) -> Iterator[bytes]:
    for lines in compressed_chunks(handle):
        yield from lines


def compressed_chunks(handle: BinaryIO) -> Iterator[list[bytes]]:
    """The lines of a zstd stream, a decompressed megabyte's worth at a time."""
    with zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True, closefd=False) as reader:
        rest = b""
        while chunk := reader.read(READ_CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield lines
        if rest:
            yield [rest]


class History:
    def __init__(self, store: Store, storage: ArchiveStorage | None, scope: Range) -> None:
        self.store = store
        self.storage = storage
        self.scope = scope

    def events(self, after: int) -> Iterator[StoredEvent]:
        """Events of the range with a position after `after`, in order."""
        for batch in self.batches(after):
            yield from batch

    def batches(self, after: int) -> Iterator[list[StoredEvent]]:
        """The same events in lists (per decompressed chunk, per page of the log): cheaper to
        produce than one at a time."""
        if after < self.scope.log_from:
            yield from self._archived(after)
        yield from self._logged(max(after, self.scope.log_from))

    def _archived(self, after: int) -> Iterator[list[StoredEvent]]:
        scope = self.scope
        while True:
            files = self.store.archive_files(
                scope.source_id, after, scope.log_from, scope.since_ms, scope.until_ms, FILES_PER_QUERY
            )
            for listed in files:
                yield from self._file_batches(listed, after)
                after = listed.last_seq
            if len(files) < FILES_PER_QUERY:
                return

    def _file_batches(self, listed: ArchiveFile, after: int) -> Iterator[list[StoredEvent]]:
        if self.storage is None:
            raise FileNotFoundError(
                f"archive file {listed.key} is listed but no archive storage is configured"
            )
        whole = self.scope.holds(listed.min_received_ms) and self.scope.holds(listed.max_received_ms)
        source_id, first = listed.source_id, listed.last_seq - listed.count + 1
        try:
            handle = self.storage.open(listed.key)
        except FileNotFoundError:
            if self.store.archive_file_keys([listed.key]):
                raise
            return  # removed by archive retention since it was listed
        with handle:
            for lines in compressed_chunks(handle):
                skip = max(0, min(len(lines), after - first + 1))
                batch = [
                    StoredEvent(position, source_id, received_ms(line), line)
                    for position, line in enumerate(lines[skip:], start=first + skip)
                ]
                first += len(lines)
                if not whole:
                    batch = [stored for stored in batch if self.scope.holds(stored.received_ms)]
                if batch:
                    yield batch

    def _logged(self, after: int) -> Iterator[list[StoredEvent]]:
        scope = self.scope
        last = self._last_relevant_seq()
        while after < last:
            page = self.store.read_log(after, 2000, scope.source_id, scope.since_ms)
            if not page:
                return
            batch = [
                stored
                for stored in page
                if stored.seq <= last and (scope.until_ms is None or stored.received_ms <= scope.until_ms)
            ]
            if batch:
                yield batch
            if page[-1].seq >= last:
                return
            after = page[-1].seq

    def _last_relevant_seq(self) -> int:
        """`last_seq`, lowered past the segments whose every event was received after `until`."""
        if self.scope.until_ms is None:
            return self.scope.last_seq
        relevant = [
            segment.last_seq
            for segment in self.store.segments()
            if segment.min_received_ms is not None and segment.min_received_ms <= self.scope.until_ms
        ]
        return min(self.scope.last_seq, max(relevant, default=0))

    def estimate(self) -> int:
        """Events in the range, for a progress bar: archive files overlapping it (whole) plus
        the log's part counted exactly."""
        scope = self.scope
        total, after = 0, 0
        while True:
            files = self.store.archive_files(
                scope.source_id, after, scope.log_from, scope.since_ms, scope.until_ms, FILES_PER_QUERY
            )
            total += sum(listed.count for listed in files)
            if len(files) < FILES_PER_QUERY:
                break
            after = files[-1].last_seq
        return total + self.store.count_log(
            scope.source_id, scope.log_from, self._last_relevant_seq(), scope.since_ms, scope.until_ms
        )


_second_cache: dict[bytes, int] = {}


def received_ms(line: bytes) -> int:
    """receivedAt of a stored event, read without parsing the whole JSON when it has the
    canonical form `YYYY-MM-DDTHH:MM:SS.mmmZ` (as every stored event has)."""
    start = line.find(_RECEIVED)
    if start >= 0:
        value = line[start + len(_RECEIVED) : start + len(_RECEIVED) + 25]
        if len(value) == 25 and value[19:20] == b"." and value[23:25] == b'Z"':
            seconds = _second_cache.get(value[:19])
            if seconds is None:
                seconds = _epoch_seconds(value[:19])
                if len(_second_cache) > 4096:
                    _second_cache.clear()
                _second_cache[value[:19]] = seconds
            return seconds * 1000 + int(value[20:23])
    parsed = parse_ms(orjson.loads(line).get("receivedAt"))
    return parsed if parsed is not None else 0


def _epoch_seconds(prefix: bytes) -> int:
    text = prefix.decode()
    return calendar.timegm(
        (
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
        )
    )
