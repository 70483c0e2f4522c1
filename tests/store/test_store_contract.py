"""One storage contract, run against both engines: SQLite (embedded) and PostgreSQL (teams).

PostgreSQL-only tests at the end cover what only a shared server has: several processes
(here: several store instances) writing at once, and connections cut under the store.
"""

from __future__ import annotations

import contextlib
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import psycopg
import pytest

from tests.store.conftest import Engine
from trackyard.spec import now_ms
from trackyard.store import (
    AppendResult,
    FailureRecord,
    LogRecord,
    SourceExists,
    SourceNotFound,
    Store,
    StoredEvent,
    StoreUnavailable,
)
from trackyard.store.postgres import PostgresStore

HOUR_MS = 3_600_000


def event(source_id: int, message_id: str, received_ms: int | None = None, **properties: object) -> LogRecord:
    body = orjson.dumps({"type": "track", "event": "Clicked", "messageId": message_id, **properties})
    return LogRecord(source_id, message_id, received_ms or now_ms(), "track", body)


def ids(events: list[StoredEvent]) -> list[str]:
    return [stored.event()["messageId"] for stored in events]


def seqs(events: list[StoredEvent]) -> list[int]:
    return [stored.seq for stored in events]


# -- configuration -----------------------------------------------------------------------
def test_sources_are_created_listed_and_found_by_name(store: Store):
    web = store.create_source("Web App", "key-web")
    ios = store.create_source("2024 iOS", "key-ios")
    assert (web.name, web.slug, web.write_key, web.enabled) == ("Web App", "web_app", "key-web", True)
    assert ios.slug == "_2024_ios"
    assert web.id != ios.id
    assert abs(web.created_ms - now_ms()) < 60_000
    assert store.list_sources() == [web, ios]
    assert store.get_source("2024 iOS") == ios
    with pytest.raises(SourceNotFound):
        store.get_source("missing")


def test_a_source_name_or_write_key_cannot_be_taken_twice(store: Store):
    store.create_source("web", "key-1")
    with pytest.raises(SourceExists):
        store.create_source("web", "key-2")
    with pytest.raises(SourceExists):
        store.create_source("other", "key-1")
    with pytest.raises(ValueError):
        store.create_source("-bad name", "key-3")
    assert [source.name for source in store.list_sources()] == ["web"]


def test_settings_are_set_read_and_overwritten(store: Store):
    assert store.get_setting("admin_token") is None
    store.set_setting("admin_token", "first")
    store.set_setting("other", "x")
    assert store.get_setting("admin_token") == "first"
    store.set_setting("admin_token", "second")
    assert store.get_setting("admin_token") == "second"
    assert store.get_setting("other") == "x"


def test_consumer_positions_are_set_read_and_overwritten(store: Store):
    assert store.get_position("webhook") is None
    store.set_position("webhook", 10)
    store.set_position("warehouse", 3)
    store.set_position("webhook", 42)
    assert store.get_position("webhook") == 42
    assert store.get_position("warehouse") == 3


def test_migrating_twice_changes_nothing(engine: Engine):
    store = engine.open()
    store.create_source("web", "key")
    store.append([event(1, "m-1")])
    store.migrate()
    assert [source.name for source in store.list_sources()] == ["web"]
    assert len(store.segments()) == 1
    assert store.head() == 1


# -- the log -----------------------------------------------------------------------------
def test_appended_events_are_read_back_in_order_byte_for_byte(store: Store):
    source = store.create_source("web", "key")
    assert store.head() == 0
    assert store.read_log() == []
    records = [event(source.id, f"m-{i}", text="café ✓ 🎉\t\\\n", n=i) for i in range(10)]
    result = store.append(records)
    assert (result.stored, result.duplicates, result.failed) == (10, 0, 0)
    stored = store.read_log()
    assert seqs(stored) == list(range(1, 11))
    assert [s.body for s in stored] == [r.body for r in records]
    assert [(s.source_id, s.received_ms) for s in stored] == [(r.source_id, r.received_ms) for r in records]
    assert store.head() == 10


def test_a_repeated_message_id_in_one_append_is_stored_once_first_copy_kept(store: Store):
    source = store.create_source("web", "key")
    batch = [event(source.id, "a", copy=1), event(source.id, "b"), event(source.id, "a", copy=2)]
    result = store.append(batch)
    assert (result.stored, result.duplicates) == (2, 1)
    stored = store.read_log()
    assert ids(stored) == ["a", "b"]
    assert stored[0].event()["copy"] == 1


def test_a_message_id_already_in_the_log_is_dropped(store: Store):
    source = store.create_source("web", "key")
    store.append([event(source.id, "a"), event(source.id, "b")])
    result = store.append([event(source.id, "b"), event(source.id, "c"), event(source.id, "a")])
    assert (result.stored, result.duplicates) == (1, 2)
    assert ids(store.read_log()) == ["a", "b", "c"]
    assert store.head() == 3


def test_the_same_message_id_in_two_sources_is_not_a_duplicate(store: Store):
    web = store.create_source("web", "key-web")
    ios = store.create_source("ios", "key-ios")
    assert store.append([event(web.id, "same")]).stored == 1
    assert store.append([event(ios.id, "same"), event(web.id, "same")]).stored == 1
    assert [(s.source_id, s.event()["messageId"]) for s in store.read_log()] == [
        (web.id, "same"),
        (ios.id, "same"),
    ]


def test_dedupe_survives_closing_and_reopening_the_store(engine: Engine):
    store = engine.open()
    source = store.create_source("web", "key")
    store.append([event(source.id, "a"), event(source.id, "b")])
    store.close()
    reopened = engine.open()
    result = reopened.append([event(source.id, "a"), event(source.id, "c")])
    assert (result.stored, result.duplicates) == (1, 1)
    assert ids(reopened.read_log()) == ["a", "b", "c"]


def test_prune_dedupe_forgets_only_ids_older_than_the_window(engine: Engine):
    store = engine.open(dedupe_window_s=1)
    source = store.create_source("web", "key")
    now = now_ms()
    old = now - 2 * HOUR_MS
    store.append([event(source.id, "old-1", old), event(source.id, "old-2", old + 1)])
    store.append([event(source.id, "recent", now)])
    assert store.prune_dedupe(now) == 2
    assert store.prune_dedupe(now) == 0
    result = store.append([event(source.id, "old-1", now), event(source.id, "recent", now)])
    assert (result.stored, result.duplicates) == (1, 1)
    assert ids(store.read_log()) == ["old-1", "old-2", "recent", "old-1"]


def test_failures_are_stored_with_their_reason_and_filtered(store: Store):
    web = store.create_source("web", "key-web")
    ios = store.create_source("ios", "key-ios")
    now = now_ms()
    # over 32 KiB: kept as a summary of its short fields, still valid JSON
    huge = FailureRecord.of(
        web.id,
        now,
        "too_large",
        "message over 32 KiB",
        {"type": "track", "userId": "ü", "text": "✓" * 20_000},
    )
    failures = [
        FailureRecord.of(web.id, now - HOUR_MS, "invalid_type", "unknown type 'tracks'", {"type": "tracks"}),
        FailureRecord.of(ios.id, now, "missing_user", "userId or anonymousId is required", {"type": "track"}),
        huge,
    ]
    result = store.append([event(web.id, "ok")], failures)
    assert (result.stored, result.duplicates, result.failed) == (1, 0, 3)
    stored = store.read_failures()
    assert [(f.source_id, f.code, f.reason, f.body) for f in stored] == [
        (f.source_id, f.code, f.reason, f.body) for f in failures
    ]
    assert orjson.loads(stored[2].body) == {"type": "track", "userId": "ü", "_truncated": True}
    assert [f.code for f in store.read_failures(source_id=web.id)] == ["invalid_type", "too_large"]
    assert [f.code for f in store.read_failures(since_ms=now)] == ["missing_user", "too_large"]
    assert [f.code for f in store.read_failures(source_id=web.id, since_ms=now)] == ["too_large"]
    assert [f.code for f in store.read_failures(limit=1)] == ["invalid_type"]
    assert ids(store.read_log()) == ["ok"]


def test_failures_alone_are_stored_without_touching_the_log(store: Store):
    source = store.create_source("web", "key")
    failure = FailureRecord.of(source.id, now_ms(), "invalid_json", "not JSON", "{")
    assert store.append([], [failure]).failed == 1
    assert len(store.read_failures()) == 1
    assert store.head() == 0


def test_read_log_pages_by_after_and_limit_and_filters_by_source_and_time(store: Store):
    web = store.create_source("web", "key-web")
    ios = store.create_source("ios", "key-ios")
    base = now_ms() - HOUR_MS
    store.append([event(web.id if i % 2 else ios.id, f"m-{i}", base + i * 1000) for i in range(1, 11)])
    assert seqs(store.read_log(after=3, limit=4)) == [4, 5, 6, 7]
    assert seqs(store.read_log(after=8)) == [9, 10]
    assert store.read_log(after=10) == []
    assert store.read_log(limit=0) == []
    assert ids(store.read_log(source_id=web.id)) == ["m-1", "m-3", "m-5", "m-7", "m-9"]
    assert ids(store.read_log(after=3, limit=2, source_id=web.id)) == ["m-5", "m-7"]
    assert ids(store.read_log(since_ms=base + 8000)) == ["m-8", "m-9", "m-10"]
    assert ids(store.read_log(source_id=ios.id, since_ms=base + 5000)) == ["m-6", "m-8", "m-10"]
    assert store.read_log(since_ms=base + 11_000) == []


def test_segments_rotate_and_reads_span_them_without_gap_or_duplicate(engine: Engine):
    store = engine.open(segment_rows=5)
    source = store.create_source("web", "key")
    base = now_ms() - HOUR_MS
    for i in range(1, 24):
        store.append([event(source.id, f"m-{i}", base + i)])
    segments = store.segments()
    assert [(s.id, s.first_seq, s.last_seq, s.rows, s.sealed) for s in segments] == [
        (1, 1, 5, 5, True),
        (2, 6, 10, 5, True),
        (3, 11, 15, 5, True),
        (4, 16, 20, 5, True),
        (5, 21, 23, 3, False),
    ]
    assert [(s.min_received_ms, s.max_received_ms) for s in segments] == [
        (base + s.first_seq, base + s.last_seq) for s in segments
    ]
    assert len({s.table for s in segments}) == 5
    assert store.head() == 23
    assert seqs(store.read_log()) == list(range(1, 24))
    assert seqs(store.read_log(after=7, limit=6)) == list(range(8, 14))
    assert ids(store.read_log(since_ms=base + 14, limit=3)) == ["m-14", "m-15", "m-16"]
    paged: list[int] = []
    while page := store.read_log(after=paged[-1] if paged else 0, limit=4):
        paged.extend(seqs(page))
    assert paged == list(range(1, 24))
    assert store.append([event(source.id, "m-3")]).duplicates == 1
    assert store.head() == 23


def test_concurrent_appends_from_threads_get_distinct_ordered_seqs(store: Store):
    source = store.create_source("web", "key")
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(thread: int) -> None:
        try:
            barrier.wait()
            for batch in range(50):
                store.append([event(source.id, f"t{thread}-{batch * 10 + i}") for i in range(10)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = store.read_log(limit=10_000)
    assert seqs(stored) == list(range(1, 2001))
    assert len(set(ids(stored))) == 2000
    for n in range(4):
        assert [i for i in ids(stored) if i.startswith(f"t{n}-")] == [f"t{n}-{i}" for i in range(500)]
    assert store.head() == 2000


def test_append_raises_store_unavailable_when_the_database_cannot_be_written(engine: Engine):
    if engine.name == "postgres":
        with socket.socket() as closed:  # bound, never listening: connections are refused
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/postgres")
            with pytest.raises(StoreUnavailable):
                store.migrate()
            with pytest.raises(StoreUnavailable):
                store.append([event(1, "a")])
            with pytest.raises(StoreUnavailable):
                store.read_log()
            store.close()
        return
    store = engine.open(busy_timeout_ms=200)
    source = store.create_source("web", "key")
    blocker = sqlite3.connect(engine.sqlite_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable):
            store.append([event(source.id, "a")])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.read_log() == []
    assert store.append([event(source.id, "a")]).stored == 1


# -- PostgreSQL only: a shared server ------------------------------------------------------
def run_together(count: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run work(0..count-1) on threads released at the same moment; return their errors."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.fixture
def pg_stores(pg_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """Independent PostgresStore instances on one schema, as separate processes would hold."""
    opened: list[PostgresStore] = []

    def make(url: str = pg_url, **options: int) -> PostgresStore:
        store = PostgresStore(url, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_postgres_processes_starting_at_once_migrate_once(pg_stores: Callable[..., PostgresStore]):
    stores = [pg_stores() for _ in range(4)]
    assert run_together(4, lambda n: stores[n].migrate()) == []
    assert len(stores[0].segments()) == 1
    assert stores[0].head() == 0


def test_postgres_writers_in_several_processes_commit_in_seq_order(pg_stores: Callable[..., PostgresStore]):
    """A reader following the log never sees a seq before an earlier one is visible."""
    writers = [pg_stores(segment_rows=50) for _ in range(4)]
    writers[0].migrate()
    source = writers[0].create_source("web", "key")
    reader = pg_stores()
    done = threading.Event()
    gaps: list[tuple[int, int]] = []
    followed: list[int] = []

    def follow() -> None:
        while not done.is_set() or reader.head() > (followed[-1] if followed else 0):
            after = followed[-1] if followed else 0
            page = seqs(reader.read_log(after=after, limit=10_000))
            if page and page != list(range(after + 1, after + 1 + len(page))):
                gaps.append((after, page[0]))
            followed.extend(page)

    def write(n: int) -> None:
        for batch in range(25):
            writers[n].append([event(source.id, f"w{n}-{batch}-{i}") for i in range(8)])

    follower = threading.Thread(target=follow)
    follower.start()
    errors = run_together(4, write)
    done.set()
    follower.join()
    assert errors == []
    assert gaps == []
    assert followed == list(range(1, 801))
    assert sum(s.rows for s in reader.segments()) == 800


def test_postgres_dedupe_holds_across_processes_racing_on_the_same_ids(
    pg_stores: Callable[..., PostgresStore],
):
    """Each round, three writers append the same ids in different orders: each id is stored once."""
    stores = [pg_stores() for _ in range(3)]
    stores[0].migrate()
    source = stores[0].create_source("web", "key")
    per_round = 2000  # large enough for the writers' claims to overlap in time
    for round_ in range(5):
        batches = [[event(source.id, f"r{round_}-{i}") for i in range(per_round)] for _ in stores]
        for batch in batches:
            random.shuffle(batch)  # different orders would deadlock if claims were not sorted
        results: list[AppendResult] = []
        assert run_together(3, lambda n, b=batches, r=results: r.append(stores[n].append(b[n]))) == []
        assert sum(r.stored for r in results) == per_round
        assert sum(r.duplicates for r in results) == 2 * per_round
    stored = stores[0].read_log(limit=100_000)
    assert seqs(stored) == list(range(1, 5 * per_round + 1))
    assert len(set(ids(stored))) == 5 * per_round


def test_postgres_prune_dedupe_drops_whole_bucket_tables(pg_stores: Callable[..., PostgresStore]):
    store = pg_stores(dedupe_window_s=1)
    store.migrate()
    source = store.create_source("web", "key")
    old = now_ms() - HOUR_MS
    store.append([event(source.id, f"m-{i}", old + i * 1000) for i in range(10)])
    buckets = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename ~ '^dedupe'"
    assert store._query(buckets) == [(10,)]
    assert store.prune_dedupe(now_ms()) == 10
    assert store._query(buckets) == [(0,)]
    assert store.append([event(source.id, "m-0")]).stored == 1


def test_postgres_store_reconnects_after_its_connections_are_terminated(
    pg_url: str, pg_stores: Callable[..., PostgresStore]
):
    name = f"ty_kill_{uuid.uuid4().hex[:8]}"
    store = pg_stores(f"{pg_url}&application_name={name}")
    store.migrate()
    source = store.create_source("web", "key")
    store.append([event(source.id, "before")])
    assert store.read_log() != []  # opens a reader connection too
    with psycopg.connect(pg_url, autocommit=True) as admin:
        query = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        pids = [pid for (pid,) in admin.execute(query, (name,))]
        assert len(pids) == 2
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute(query, (name,)).fetchall() and time.monotonic() < deadline:
            time.sleep(0.05)
    with contextlib.suppress(StoreUnavailable):  # the first call may find the dead connection
        store.append([event(source.id, "maybe")])
    assert store.append([event(source.id, "after")]).stored == 1
    assert ids(store.read_log())[0] == "before"
    assert ids(store.read_log())[-1] == "after"
