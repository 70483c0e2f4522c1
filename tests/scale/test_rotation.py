"""Rotation on PostgreSQL (issue #7): after a million events flow through with every consumer
caught up, old log segments are dropped and the schema's disk use returns near its baseline.

Disk margin. What must stay: the newest `keep_segments` sealed segments and the open one
(retention keeps them by design); the dedupe ids of the last two or three windows (here a
trickle: the load's buckets are dropped some 15 s after it ends); tables that hold a bounded amount
whatever the volume (the last delivery attempts per destination, the archive manifest,
per-minute counts), which PostgreSQL does not shrink after their rows are replaced. So the
check is: the schema's size minus the kept segments is under 2 × the baseline (the tables
and indexes of an empty schema, ~0.5 MB) plus BOUNDED_TABLES_MARGIN (4 MB; ~1.3 MB is used),
after a million events of log and dedupe ids (~450 MB) flowed through. Before the dedupe
ids were dropped by bucket, their row-deleted table kept ~140 MB here.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from trackyard.spec import now_ms
from trackyard.store import AppendResult, LogRecord
from trackyard.store.postgres import MIGRATIONS, PostgresStore, bucket_start

EVENTS = 1_000_000
BATCH = 500
CONNECTIONS = 4
SEGMENT_ROWS = 100_000
KEEP_SEGMENTS = 2
DEDUPE_WINDOW_S = 5
BOUNDED_TABLES_MARGIN = 4 * 1024 * 1024
LOAD_BOUND_S = 240.0
CATCH_UP_BOUND_S = 180.0
SETTINGS = {
    "TRACKYARD_SEGMENT_ROWS": str(SEGMENT_ROWS),
    "TRACKYARD_LOG_RETENTION_HOURS": "0",
    "TRACKYARD_LOG_RETENTION_SEGMENTS": str(KEEP_SEGMENTS),
    "TRACKYARD_DEDUPE_WINDOW_S": str(DEDUPE_WINDOW_S),
    "TRACKYARD_ARCHIVE_FILE_MAX_AGE_S": "2",
    "TRACKYARD_DEFAULT_WAREHOUSE": "off",
}


class _CountingSink(BaseHTTPRequestHandler):
    """Answers 200 to every request and counts the events of webhook batches."""

    protocol_version = "HTTP/1.1"
    events = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        decoded = orjson.loads(body)
        type(self).events += len(decoded) if isinstance(decoded, list) else 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def sink() -> Iterator[tuple[str, type[_CountingSink]]]:
    handler = type("Sink", (_CountingSink,), {"events": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", handler
    finally:
        server.shutdown()
        server.server_close()


def schema_sizes(url: str) -> dict[str, int]:
    """pg_total_relation_size (table, indexes, TOAST) of every table of the URL's schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename, pg_total_relation_size(format('%I.%I', schemaname, tablename)) "
            "FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    return {name: int(size) for name, size in rows}


def segment_tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM log_segments ORDER BY id").fetchall()]
    return [f"log_{segment_id:06d}" for segment_id in ids]


async def send_events(url: str, write_key: str, total: int) -> None:
    """`total` events in batches of BATCH over CONNECTIONS concurrent connections; a batch
    answered 503 is sent again, as the SDKs do."""
    tag = uuid.uuid4().hex[:8]
    batches = iter(range(0, total, BATCH))
    deadline = time.monotonic() + LOAD_BOUND_S

    async def connection() -> None:
        async with httpx.AsyncClient(base_url=url, auth=(write_key, ""), timeout=30) as client:
            for start in batches:
                events = [
                    {"type": "track", "event": "Rotated", "userId": f"u-{n % 997}", "messageId": f"{tag}-{n}"}
                    for n in range(start, min(start + BATCH, total))
                ]
                body = orjson.dumps({"batch": events})
                headers = {"Content-Type": "application/json"}
                while (
                    response := await client.post("/v1/batch", content=body, headers=headers)
                ).status_code != 200:
                    assert response.status_code == 503 and time.monotonic() < deadline, response.text
                    await asyncio.sleep(0.5)
                assert time.monotonic() < deadline, f"sending {total} events took over {LOAD_BOUND_S} s"

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))


def consumers_caught_up(server) -> bool:
    status = orjson.loads(server.cli("status", "--json").stdout)
    return bool(status["consumers"]) and all(c["lag"] == 0 for c in status["consumers"])


def test_a_million_events_rotate_away_and_disk_returns_near_its_baseline(make_server, pg_url, tmp_path, sink):
    sink_url, counted = sink
    server = make_server(database_url=pg_url, data_dir=tmp_path / "serve", **SETTINGS).start()
    server.cli(
        "destination", "add", "default", "webhook", "--name", "sink",
        "--setting", f"url={sink_url}", "--setting", "batch_size=500",
    )  # fmt: skip
    baseline = sum(schema_sizes(pg_url).values())

    started = time.monotonic()
    asyncio.run(send_events(server.url, server.write_key, EVENTS))
    load_s = time.monotonic() - started
    print(f"\n{EVENTS} events sent in {load_s:.1f} s ({EVENTS / load_s:,.0f} events/s)")

    deadline = time.monotonic() + CATCH_UP_BOUND_S
    while not consumers_caught_up(server) and time.monotonic() < deadline:
        time.sleep(1)
    assert counted.events >= EVENTS, f"the sink got {counted.events} of {EVENTS} events"
    # retention runs when the archive moves, and old dedupe buckets go every half window: a
    # trickle of events keeps both moving, as live traffic does
    nudges = 0
    while not rotated(pg_url, baseline) and time.monotonic() < deadline:
        asyncio.run(send_events(server.url, server.write_key, 1))
        nudges += 1
        time.sleep(1)
    after_s = time.monotonic() - started - load_s
    print(f"caught up and rotated {after_s:.1f} s after the load ({nudges} nudges)")

    segments = segment_tables(pg_url)
    assert len(segments) <= KEEP_SEGMENTS + 1, segments
    assert segments[0] != "log_000001"
    sizes = schema_sizes(pg_url)
    rest = beyond_kept_segments(sizes, segments)
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:8]
    print(f"baseline {baseline:,} B; beyond the kept segments {rest:,} B; largest {largest}")
    assert rest <= 2 * baseline + BOUNDED_TABLES_MARGIN, largest


def beyond_kept_segments(sizes: dict[str, int], segments: list[str]) -> int:
    return sum(sizes.values()) - sum(sizes[table] for table in segments)


def rotated(url: str, baseline: int) -> bool:
    segments = segment_tables(url)
    return (
        len(segments) <= KEEP_SEGMENTS + 1
        and beyond_kept_segments(schema_sizes(url), segments) <= 2 * baseline + BOUNDED_TABLES_MARGIN
    )


def tracked(source_id: int, message_id: str, received_ms: int) -> LogRecord:
    return LogRecord(source_id, message_id, received_ms, "track", b'{"type":"track","event":"E"}')


def bucket_tables(url: str) -> list[str]:
    return sorted(name for name in schema_sizes(url) if name.startswith("dedupe_"))


def test_dedupe_catches_repeats_across_a_bucket_boundary_and_forgets_by_dropping_tables(pg_url):
    store = PostgresStore(pg_url, dedupe_window_s=60)
    store.migrate()
    try:
        source = store.create_source("web", "key")
        boundary = bucket_start(now_ms(), store.dedupe_bucket_ms)
        assert store.append([tracked(source.id, "m-1", boundary - 1)]).stored == 1
        repeat = store.append(
            [tracked(source.id, "m-1", boundary + 1), tracked(source.id, "m-2", boundary + 1)]
        )
        assert (repeat.stored, repeat.duplicates) == (1, 1)
        # an earlier receipt committed later is found in the next bucket
        assert store.append([tracked(source.id, "m-2", boundary - 2)]).duplicates == 1
        assert len(bucket_tables(pg_url)) == 2

        # a bucket goes once it is no neighbour of the current one, after a grace (a bucket here)
        assert store.prune_dedupe(boundary + 119_999) == 0
        assert store.prune_dedupe(boundary + 120_000) == 2  # each bucket holds m-1 and m-2
        assert len(bucket_tables(pg_url)) == 1
        assert store.prune_dedupe(boundary + 180_000) == 2
        assert bucket_tables(pg_url) == []
        assert store.append([tracked(source.id, "m-1", boundary + 180_000)]).stored == 1
    finally:
        store.close()


def test_a_batch_spanning_buckets_is_checked_against_each_ones_neighbours(pg_url):
    store = PostgresStore(pg_url, dedupe_window_s=60)
    store.migrate()
    try:
        source = store.create_source("web", "key")
        middle = bucket_start(now_ms(), store.dedupe_bucket_ms)
        assert store.append([tracked(source.id, "y", middle + 1)]).stored == 1
        result = store.append(
            [tracked(source.id, "y", middle + 60_001), tracked(source.id, "x", middle - 59_999)]
        )
        assert (result.stored, result.duplicates) == (1, 1)
    finally:
        store.close()


def test_upgrading_moves_the_ids_of_the_single_dedupe_table_into_buckets(pg_url):
    received = now_ms() - 1000
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a schema of version 5
        conn.execute("CREATE TABLE schema_migrations (version INT PRIMARY KEY)")
        for version, script in enumerate(MIGRATIONS[:5], start=1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        conn.execute(
            "INSERT INTO dedupe (source_id, message_id, received_ms) VALUES (1, 'm-1', %s)", (received,)
        )
    store = PostgresStore(pg_url, dedupe_window_s=60)
    store.migrate()
    try:
        source = store.create_source("web", "key")
        assert source.id == 1
        assert store.append([tracked(source.id, "m-1", now_ms())]).duplicates == 1
        assert "dedupe" not in schema_sizes(pg_url) and "dedupe_legacy" not in schema_sizes(pg_url)
    finally:
        store.close()


def test_two_processes_claiming_ids_in_adjacent_buckets_at_once_store_each_once(pg_url):
    """Exactly once across processes: each claim lands in its own bucket, and the lookup in
    the adjacent one under the head lock sees the claim of whoever committed first."""
    stores = [PostgresStore(pg_url, dedupe_window_s=60) for _ in range(2)]
    stores[0].migrate()
    try:
        source = stores[0].create_source("web", "key")
        boundary = bucket_start(now_ms(), stores[0].dedupe_bucket_ms)
        for round_ in range(20):
            ids = [f"r{round_}-{i}" for i in range(300)]
            start = threading.Barrier(2)
            results: list[AppendResult] = []
            threads = [
                threading.Thread(
                    target=append_together, args=(start, store, source.id, ids, received, results)
                )
                for store, received in ((stores[0], boundary - 1), (stores[1], boundary + 1))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert sum(result.stored for result in results) == 300, results
        stored = stores[0].read_log(limit=100_000)
        assert len(stored) == 20 * 300
    finally:
        for store in stores:
            store.close()


def append_together(
    start: threading.Barrier,
    store: PostgresStore,
    source_id: int,
    ids: list[str],
    received_ms: int,
    results: list[AppendResult],
) -> None:
    start.wait()
    results.append(store.append([tracked(source_id, m, received_ms) for m in ids]))
