"""The archive writer fed from memory by the committer: same files as from the log, and
the log read only for what the feed does not hold."""

from __future__ import annotations

from pathlib import Path

from tests.archive.helpers import history_start, record
from tests.archive.test_archive import log_bodies
from trackyard.archive.history import file_lines
from trackyard.archive.storage import FileSystemStorage
from trackyard.archive.writer import ArchiveOptions, ArchiveWriter, CommittedFeed
from trackyard.store import LogRecord, StoredEvent
from trackyard.store.sqlite import SQLiteStore


def records(first: int, count: int) -> list[LogRecord]:
    return [record(1, index, 1_000 + index)[0] for index in range(first, first + count)]


def seqs(events: list[StoredEvent]) -> list[int]:
    return [event.seq for event in events]


def test_the_feed_hands_out_contiguous_events_and_stops_at_a_gap():
    feed = CommittedFeed()
    feed.committed(1, records(0, 3))
    feed.committed(7, records(6, 3))  # seqs 4-6 were written by someone else

    assert seqs(feed.take(0, 100)) == [1, 2, 3]
    assert feed.take(3, 100) == []  # 4 is not held: the writer reads the log
    assert seqs(feed.take(6, 2)) == [7, 8]
    taken = feed.take(8, 10)
    assert seqs(taken) == [9]
    assert (taken[0].source_id, taken[0].received_ms) == (1, 1_008)
    assert taken[0].body == records(8, 1)[0].body
    assert feed.take(9, 10) == []


def test_the_feed_keeps_only_the_newest_events_when_full():
    feed = CommittedFeed(max_events=5)
    for first in (1, 4, 7):
        feed.committed(first, records(first - 1, 3))

    assert feed.take(0, 10) == []  # 1-6 were dropped
    assert seqs(feed.take(6, 10)) == [7, 8, 9]


def test_a_fed_writer_archives_exactly_the_log_and_reads_only_what_the_feed_dropped(tmp_path: Path):
    store = SQLiteStore(tmp_path / "trackyard.db", segment_rows=700)
    store.migrate()
    source = store.create_source("web", "k1")
    feed = CommittedFeed(max_events=1_500)
    start = history_start()
    for batch in range(10):
        appended = [
            record(source.id, index, start + index * 1000)[0]
            for index in range(batch * 300, (batch + 1) * 300)
        ]
        result = store.append(appended)
        assert (result.first_seq, len(result.records)) == (batch * 300 + 1, 300)
        feed.committed(result.first_seq, result.records)
    read_from_log: list[int] = []
    read_log = store.read_log

    def counting_read_log(*args: int, **kwargs: int) -> list[StoredEvent]:
        page = read_log(*args, **kwargs)
        read_from_log.extend(seqs(page))
        return page

    store.read_log = counting_read_log  # type: ignore[method-assign]
    storage = FileSystemStorage(tmp_path / "archive")
    writer = ArchiveWriter(store, storage, ArchiveOptions(page_size=1000), feed=feed)
    writer.catch_up()

    # The feed held 1,501-3,000: whole pages of the log up to there, then none.
    assert read_from_log == list(range(1, 2_001))
    store.read_log = read_log  # type: ignore[method-assign]
    archived = [
        line
        for listed in store.archive_files(source.id, limit=100)
        for line in file_lines(storage, listed.key)
    ]
    assert archived == log_bodies(store, source.id)
