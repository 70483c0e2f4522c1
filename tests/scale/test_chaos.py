"""Scale-out under faults (issue #7): two ingest processes and two workers on one PostgreSQL
schema take 200,000 events while workers and ingest processes are SIGKILLed and restarted
and the PostgreSQL connections of one process at a time are cut. Afterwards the log holds
every acknowledged event exactly once, the webhook sink received each at least once (with
duplicates bounded by the in-flight window), and the PostgreSQL warehouse holds each once.

TRACKYARD_CHAOS_SEED replays a run's schedule of faults (the seed is printed);
TRACKYARD_CHAOS_EVENTS changes the number of events (a multiple of 100);
TRACKYARD_CHAOS_LOG_LEVEL=INFO makes the servers log lease hand-overs (in serve-PORT.log).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from tests.conftest import PG_URL, Server, missing_service
from tests.fakes import FakeVendor
from tests.scale.chaos_load import BATCH, Chaos, LoadGenerator
from tests.scale.chaos_sink import WebhookSink
from trackyard.delivery.recorder import Recorder
from trackyard.delivery.worker import DestinationWorker
from trackyard.destinations import registry
from trackyard.destinations.base import parse_settings
from trackyard.store import LogRecord, open_store

EVENTS = int(os.environ.get("TRACKYARD_CHAOS_EVENTS", 200_000))
LOAD_S = 40.0  # the load is paced over this long, so faults land while it flows
PARTITIONS = 2
CONCURRENCY = 4
WEBHOOK_BATCH = 100
CATCH_UP_S = 120.0
SECRET = "chaos-shared-secret"
SERVER_ENV = {
    "TRACKYARD_LEASE_TTL_S": "3",  # a killed worker's partitions move after ≤ 3 s (+ 1 s sync)
    "TRACKYARD_RETRY_BACKOFF_BASE_S": "0.05",
    "TRACKYARD_RETRY_BACKOFF_CAP_S": "0.5",
    "TRACKYARD_WAREHOUSE_INTERVAL_S": "1",
    "TRACKYARD_DEFAULT_WAREHOUSE": "off",  # the PostgreSQL warehouse is the one under test
    "TRACKYARD_LOG_LEVEL": os.environ.get("TRACKYARD_CHAOS_LOG_LEVEL", "WARNING"),
}


@pytest.fixture
def warehouse_url() -> Iterator[str]:
    """A database of its own: the warehouse writes fixed schemas (`default`, `_trackyard`)
    and takes a database-wide advisory lock, so a schema alone would not isolate it."""
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing_service(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    name = f"ty_chaos_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def serve(make_server, pg_url: str, role: str, tmp_path, name: str) -> Server:
    server = make_server(
        database_url=pg_url,
        data_dir=tmp_path / name,
        TRACKYARD_ARCHIVE_DIR=str(tmp_path / "archive"),  # shared, as a bucket would be
        **SERVER_ENV,
    )
    server.extra_args = ["--role", role]
    return server.start()


def configure(ingest: Server, sink: WebhookSink, warehouse_url: str) -> None:
    settings = {
        "url": sink.url,
        "batch_size": WEBHOOK_BATCH,
        "partitions": PARTITIONS,
        "concurrency": CONCURRENCY,
        "shared_secret": SECRET,
    }
    options = [arg for key, value in settings.items() for arg in ("--setting", f"{key}={value}")]
    ingest.cli("destination", "add", "default", "webhook", "--name", "hook", *options)
    ingest.cli("warehouse", "add", "postgres", "--name", "team", "--url", warehouse_url)


def log_ids(pg_url: str) -> Counter[str]:
    """Every messageId in the log, with its number of rows, across all segments."""
    with psycopg.connect(pg_url) as conn:
        tables = [
            t for (t,) in conn.execute("SELECT format('log_%s', lpad(id::text, 6, '0')) FROM log_segments")
        ]
        return Counter(
            mid for table in tables for (mid,) in conn.execute(f'SELECT message_id FROM "{table}"')
        )


def log_head(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT next_seq - 1 FROM log_head").fetchone()
        return int(row[0]) if row else 0


def destination_positions(pg_url: str) -> list[int]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT position FROM consumer_positions WHERE consumer LIKE 'destination:%%:p%%of' || %s",
            (str(PARTITIONS),),
        ).fetchall()
    return [int(position) for (position,) in rows]


def warehouse_position(url: str) -> int:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('_trackyard.position')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM _trackyard.position").fetchone()
        return int(row[0]) if row else 0


def warehouse_ids(url: str) -> tuple[int, set[str]]:
    """The row count of the warehouse's tracks table and its distinct ids."""
    with psycopg.connect(url) as conn:
        ids = [mid for (mid,) in conn.execute('SELECT id FROM "default".tracks')]
    return len(ids), set(ids)


def caught_up(pg_url: str, warehouse: str) -> bool:
    head = log_head(pg_url)
    positions = destination_positions(pg_url)
    return len(positions) == PARTITIONS and min(positions) >= head and warehouse_position(warehouse) >= head


def wait_until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"{what}: not reached within {timeout:.0f} s")


def live_pids(pg_url: str, within_ms: int = 10_000) -> set[int]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT pid FROM processes WHERE heartbeat_ms >= (extract(epoch FROM now()) * 1000)::bigint - %s",
            (within_ms,),
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def duplicate_bound(disruptions: int, events_per_s: float) -> int:
    """What a worker disruption may deliver twice.

    When a worker dies (or loses its lease, or hands a partition over), another resumes each
    of its partitions from the last saved position, which is the seq before the oldest event
    not yet settled. What is re-sent is therefore (a) the requests in flight: `concurrency`
    requests of `batch_size` events per partition, and (b) what settled after the last save:
    positions are saved every 0.2 s, plus the save's own round trip; we allow 0.5 s at the
    measured delivery rate of all partitions together. A worker kill counts twice: the kill,
    then the hand-over of a partition when the restarted worker rejoins (its in-flight
    requests are cancelled). A cut of a worker's connections counts once (a lost lease).
    """
    in_flight = PARTITIONS * CONCURRENCY * WEBHOOK_BATCH
    settled_since_save = int(events_per_s * 0.5)
    return disruptions * (in_flight + settled_since_save)


def test_nothing_acknowledged_is_lost_while_processes_die_and_connections_are_cut(
    pg_url, warehouse_url, make_server, tmp_path
):
    # pg_url and warehouse_url come first: their teardown (dropping the schema and the
    # database) then runs after make_server's, which stops the servers
    seed = int(os.environ.get("TRACKYARD_CHAOS_SEED", random.randrange(1 << 32)))
    print(f"\nchaos seed {seed} (TRACKYARD_CHAOS_SEED={seed} replays this schedule)")
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    started_test = time.monotonic()

    with WebhookSink(SECRET, PARTITIONS) as sink:
        first = serve(make_server, pg_url, "ingest", tmp_path, "ingest-a")
        configure(first, sink, warehouse_url)
        ingests = [first, serve(make_server, pg_url, "ingest", tmp_path, "ingest-b")]
        workers = [serve(make_server, pg_url, "worker", tmp_path, name) for name in ("worker-a", "worker-b")]

        load = LoadGenerator(ingests, first.write_key, run, EVENTS, LOAD_S, threads=4)
        chaos = Chaos(rng, workers, ingests, PG_URL, window=(2.0, LOAD_S * 0.7))
        started = time.monotonic()
        monkey = threading.Thread(target=chaos.run, args=(started,), name="chaos")
        monkey.start()
        load.send_all()
        monkey.join(60)
        load_ended = time.monotonic()
        load_s = load_ended - started
        print("\n".join(["faults:", *(line for _, line in chaos.log.done)]))
        assert not monkey.is_alive() and chaos.error is None, f"chaos failed: {chaos.error!r}"

        catch_up_s = wait_until(lambda: caught_up(pg_url, warehouse_url), CATCH_UP_S, "consumers caught up")
        log = log_ids(pg_url)
        delivered = sink.received()
        rows, in_warehouse = warehouse_ids(warehouse_url)
        violations = list(sink.violations)
        delivery_rate = sum(delivered.values()) / max(0.001, sink.last_at - sink.first_at)
        silences = sink.longest_silences(started, load_ended)

    acked = load.acked_ids()
    duplicates = sum(delivered.values()) - len(delivered)
    bound = duplicate_bound(2 * chaos.log.worker_kills + chaos.log.worker_cuts, delivery_rate)
    print(
        f"events {EVENTS}: acked {len(acked)}, given up {len(load.report.given_up) * BATCH}, "
        f"retried requests {load.report.retries} {load.report.statuses}; load {load_s:.1f} s, "
        f"catch-up {catch_up_s:.1f} s, total {time.monotonic() - started_test:.1f} s; "
        f"sink duplicates {duplicates} (bound {bound}, {delivery_rate:.0f} events/s, "
        f"{sink.aborted} requests cut short); "
        f"warehouse rows {rows}; longest silence per partition during the load "
        f"{', '.join(f'{s:.1f} s' for s in silences)}"
    )

    assert all(chaos.log.count(kind) >= 2 for kind in Chaos.KINDS), chaos.log.done
    assert chaos.last_fault_at < load_ended, "every fault must hit while the load is running"
    assert len(acked) > EVENTS * 0.9, load.report
    assert not violations, violations[:5]

    assert acked <= log.keys(), f"{len(acked - log.keys())} acknowledged events are missing from the log"
    assert max(log.values()) == 1, [mid for mid, n in log.items() if n > 1][:10]
    assert log.keys() <= load.sent_ids()

    assert acked <= delivered.keys(), f"{len(acked - delivered.keys())} acknowledged events never delivered"
    assert delivered.keys() == log.keys(), "the sink gets every event of the log, acknowledged or not"
    assert duplicates <= bound, f"{duplicates} duplicates at the sink exceed the in-flight bound {bound}"

    assert rows == len(in_warehouse), "the warehouse holds an event twice"
    assert acked <= in_warehouse, (
        f"{len(acked - in_warehouse)} acknowledged events missing from the warehouse"
    )
    assert in_warehouse == log.keys(), "the warehouse holds every event of the log"

    running = {server.process.pid for server in ingests + workers if server.process}
    assert all(server.process and server.process.poll() is None for server in ingests + workers)
    wait_until(lambda: running <= live_pids(pg_url), 10, "every process heartbeats after the faults")


def test_an_event_committed_while_the_worker_finds_the_log_empty_is_delivered(tmp_path):
    """The first bug the chaos run found: an idle worker read an empty page, then the head,
    and moved past the head, so an event committed between the two reads was never sent
    (the first events of a load went missing from one partition)."""
    store = open_store(None, tmp_path)
    store.migrate()
    source = store.create_source("web", "key")
    late = LogRecord(source.id, "late-1", 0, "track", orjson.dumps({"type": "track", "messageId": "late-1"}))
    read_log = store.read_log

    def commit_after_an_empty_read(*args, **kwargs):
        page = read_log(*args, **kwargs)
        if not page and store.head() == 0:
            store.append([late])  # lands after this read looked, before the worker reads the head
        return page

    store.read_log = commit_after_an_empty_read  # type: ignore[method-assign]
    with FakeVendor() as vendor:
        config = store.create_destination(source.id, "webhook", "hook", {"url": vendor.url})
        webhook = registry.get("webhook")
        settings = parse_settings(webhook.Settings, config.settings)
        worker = DestinationWorker(store, config, webhook, settings, Recorder(store))

        async def deliver() -> None:
            task = asyncio.create_task(worker.run())
            try:
                await asyncio.to_thread(vendor.wait_for, lambda requests: len(requests) == 1, 10)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        asyncio.run(deliver())
    assert [request.json()["messageId"] for request in vendor.received()] == ["late-1"]
    store.close()
