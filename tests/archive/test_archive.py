"""The archive writer, log retention and history reading, on both store engines."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.archive.helpers import DAY_MS, HOUR_MS, archive_all, fill, history_start, record
from tests.store.conftest import Engine
from trackyard.archive.history import History, Range, file_lines
from trackyard.archive.retention import RetentionPolicy, drop_expired_segments
from trackyard.archive.service import verify_archive
from trackyard.archive.storage import FileSystemStorage
from trackyard.archive.writer import PUBLISHING_SETTING, ArchiveWriter
from trackyard.spec import now_ms
from trackyard.store import Store, StoredEvent, StoreError
from trackyard.store.archive import ARCHIVE_CONSUMER

KEY = re.compile(
    r"^(?P<slug>[a-z_0-9]+)/(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/(?P<h>\d\d)-(?P<n>\d+)\.jsonl\.zst$"
)


def log_bodies(store: Store, source_id: int) -> list[bytes]:
    bodies: list[bytes] = []
    after = 0
    while page := store.read_log(after, 1000, source_id):
        bodies.extend(stored.body for stored in page)
        after = page[-1].seq
    return bodies


def test_every_event_is_archived_once_in_a_file_of_its_source_and_hour(engine: Engine, tmp_path: Path):
    store = engine.open(segment_rows=500)
    web, ios = store.create_source("web", "k1"), store.create_source("iOS App", "k2")
    start = history_start()
    fill(store, [web.id, ios.id], 3000, start + 17 * 60_000, 5000)  # 4 h 10 min, from hh:17
    storage = FileSystemStorage(tmp_path / "archive")
    archive_all(store, storage.root, checkpoint_events=700)

    assert store.get_position(ARCHIVE_CONSUMER) == store.head() == 3000
    for source in (web, ios):
        files = store.archive_files(source.id, limit=10_000)
        assert len(files) >= 5  # five hours, and checkpoints cut some hours in two
        archived: list[bytes] = []
        for listed in files:
            match = KEY.match(listed.key)
            assert match is not None, listed.key
            hour = datetime.fromtimestamp(listed.hour_ms / 1000, UTC)
            assert match["slug"] == source.slug
            assert (match["y"], match["m"], match["d"], match["h"]) == (
                f"{hour:%Y}",
                f"{hour:%m}",
                f"{hour:%d}",
                f"{hour:%H}",
            )
            assert (
                listed.hour_ms <= listed.min_received_ms <= listed.max_received_ms < listed.hour_ms + HOUR_MS
            )
            lines = list(file_lines(storage, listed.key))
            assert len(lines) == listed.count
            archived.extend(lines)
        assert archived == log_bodies(store, source.id)  # byte for byte, in log order, none twice
    report = verify_archive(store, storage)
    assert report["ok"], report
    assert (report["events"], report["unlisted"], report["gaps"]) == (3000, [], [])


def test_an_event_of_an_earlier_hour_starts_a_new_file_so_each_source_stays_in_log_order(
    engine: Engine, tmp_path: Path
):
    store = engine.open()
    web = store.create_source("web", "k1")
    start = history_start()
    hours = [0, 0, 1, 1, 0, 1, 2]  # a late event of hour 0 arrives after hour 1 began
    records = [record(web.id, i, start + hour * HOUR_MS + i)[0] for i, hour in enumerate(hours)]
    store.append(records)
    storage = FileSystemStorage(tmp_path / "archive")
    archive_all(store, storage.root)

    files = store.archive_files(web.id)
    assert [(f.hour_ms - start) // HOUR_MS for f in files] == [0, 1, 0, 1, 2]
    assert [f.part for f in files] == [1, 1, 2, 2, 1]
    assert [(f.first_seq, f.last_seq) for f in files] == [(1, 2), (3, 4), (5, 5), (6, 6), (7, 7)]
    history = History(store, storage, Range(web.id, log_from=store.head(), last_seq=store.head()))
    assert [stored.body for stored in history.events(0)] == [r.body for r in records]


def test_history_reads_the_archive_then_the_log_and_resumes_from_any_position(engine: Engine, tmp_path: Path):
    store = engine.open(segment_rows=200)
    web, other = store.create_source("web", "k1"), store.create_source("other", "k2")
    start = history_start()
    fill(store, [web.id, other.id, web.id], 1500, start, 7000, batch_size=50)
    storage = FileSystemStorage(tmp_path / "archive")
    archive_all(store, storage.root, checkpoint_events=400)
    store.set_position("destination:1", store.head())
    dropped = drop_expired_segments(store, RetentionPolicy(hours=0, keep_segments=1), now_ms())
    assert dropped and store.segments()[0].first_seq > 1
    fill(
        store, [web.id, other.id], 600, start + 1500 * 7000, 7000, prefix="late", batch_size=50
    )  # only in the log
    archived = store.get_position(ARCHIVE_CONSUMER)
    assert archived is not None and archived < store.head()

    history = History(store, storage, Range(web.id, log_from=archived, last_seq=store.head()))
    everything = list(history.events(0))
    assert [s.body for s in everything] == [r.body for r in _all_of(store, storage, web.id)]
    positions = [s.seq for s in everything]
    assert positions == sorted(set(positions))
    for index in range(0, len(everything), 37):
        resumed = list(history.events(positions[index]))
        assert [s.body for s in resumed] == [s.body for s in everything[index + 1 :]]

    since, until = start + 400 * 7000 + 3, start + 1800 * 7000 - 3
    window = History(store, storage, Range(web.id, archived, store.head(), since, until))
    expected = [s.body for s in everything if since <= s.received_ms <= until]
    assert [s.body for s in window.events(0)] == expected
    assert window.estimate() >= len(expected)


def _all_of(store: Store, storage: FileSystemStorage, source_id: int) -> list[StoredEvent]:
    """The source's events from the manifest's files, then from the log past the archive."""
    events: list[StoredEvent] = []
    for listed in store.archive_files(source_id, limit=10_000):
        events.extend(StoredEvent(0, source_id, 0, line) for line in file_lines(storage, listed.key))
    archived = store.get_position(ARCHIVE_CONSUMER) or 0
    events.extend(s for s in store.read_log(archived, 100_000, source_id))
    return events


def test_retention_drops_sealed_segments_only_once_the_archive_and_every_consumer_passed(
    engine: Engine, tmp_path: Path
):
    store = engine.open(segment_rows=100)
    web = store.create_source("web", "k1")
    fill(store, [web.id], 1000, history_start(), 1000, batch_size=100)
    policy = RetentionPolicy(hours=0, keep_segments=2)
    store.set_position("destination:1", 250)

    assert drop_expired_segments(store, policy, now_ms()) == []  # nothing archived yet
    archive_all(store, tmp_path / "archive")
    assert [s.id for s in drop_expired_segments(store, policy, now_ms())] == [1, 2]  # the lagging consumer
    store.set_position("destination:1", 1000)
    assert [s.id for s in drop_expired_segments(store, policy, now_ms())] == [3, 4, 5, 6, 7]
    assert [(s.id, s.sealed) for s in store.segments()] == [(8, True), (9, True), (10, False)]
    assert store.read_log(0, 1)[0].seq == 701

    fill(
        store, [web.id], 400, now_ms() - HOUR_MS, 1000, prefix="now", batch_size=100
    )  # seq 1001-1400: segments 11-14
    archive_all(store, tmp_path / "archive")
    store.set_position("destination:1", store.head())
    everything = RetentionPolicy(hours=0, keep_segments=0)
    assert [s.id for s in drop_expired_segments(store, everything, now_ms())] == [8, 9, 10]  # young ones stay
    two_days_later = now_ms() + 2 * DAY_MS
    assert [s.id for s in drop_expired_segments(store, everything, two_days_later)] == [11, 12, 13]
    assert [s.id for s in store.segments()] == [14]


def test_only_sealed_segments_can_be_dropped(store: Store):
    web = store.create_source("web", "k1")
    store.append([record(web.id, 0, history_start())[0]])
    with pytest.raises(StoreError):
        store.drop_segment(store.segments()[-1].id)
    with pytest.raises(StoreError):
        store.drop_segment(999)


def test_a_file_published_but_never_listed_is_removed_when_the_writer_starts(store: Store, tmp_path: Path):
    web = store.create_source("web", "k1")
    fill(store, [web.id], 50, history_start(), 1000)
    storage = FileSystemStorage(tmp_path / "archive")
    stray = "web/2020/01/01/00-1.jsonl.zst"
    (storage.root / "web/2020/01/01").mkdir(parents=True)
    (storage.root / stray).write_bytes(b"written by a writer killed before its checkpoint committed")
    (storage.root / ".staging").mkdir()
    (storage.root / ".staging" / "half.tmp").write_bytes(b"half")
    store.set_setting(PUBLISHING_SETTING, f'["{stray}"]')

    writer = ArchiveWriter(store, storage)
    writer.catch_up()
    assert not (storage.root / stray).exists()
    assert list((storage.root / ".staging").iterdir()) == []
    report = verify_archive(store, storage)
    assert report["ok"] and report["unlisted"] == [] and report["events"] == 50


def test_verify_reports_a_damaged_file_a_missing_one_and_an_unlisted_one(store: Store, tmp_path: Path):
    web = store.create_source("web", "k1")
    fill(store, [web.id], 3000, history_start(), 10_000)  # about 8 hours: 9 files
    storage = FileSystemStorage(tmp_path / "archive")
    archive_all(store, storage.root)
    first, second = store.archive_files(web.id)[:2]
    damaged = storage.root / first.key
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (storage.root / second.key).unlink()
    (storage.root / "web/stray.jsonl.zst").write_bytes(b"")

    report = verify_archive(store, storage)
    assert not report["ok"]
    assert any(first.key in problem and "checksum" in problem for problem in report["problems"])
    assert f"{second.key}: listed but missing" in report["problems"]
    assert report["unlisted"] == ["web/stray.jsonl.zst"]
