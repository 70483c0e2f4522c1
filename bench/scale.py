"""Scale-out benchmark on PostgreSQL: 1 and 2 ingest processes, 1 and 2 delivery workers,
and PostgreSQL's own floor for the same rows, in one run.

* ingest: `trackyard serve --role ingest` × 1, then × 2 (each on a fresh schema), loaded
  closed-loop by one wrk per process (/v1/batch, 100 events per request, the connections
  split between them) for --seconds after --warmup; events/s are durable, deduplicated
  events counted in the log; CPU of every trackyard process and of the PostgreSQL
  processes serving this run (below), as µs per event; then a re-sent batch checks dedupe
  across the processes.
* delivery: a backlog of --backlog events stored through one ingest process while the
  Webhook destination (batch_size, partitions) is disabled and no worker runs; then
  `--role worker` × 1 (then × 2, on a fresh backlog) drains it into bench/sink.py once
  the destination is enabled: events/s from the first to the last event at the sink,
  worker CPU per event. The workers run without the built-in DuckDB warehouse, and their
  archive writer has caught up on the backlog before the destination is enabled, so the
  drain measures delivery alone. With --analyze-backlog the log is ANALYZEd before the
  drain, as autovacuum does within a minute of a segment filling (docs/performance.md:
  without statistics a fresh segment is read with a far costlier plan).
* floor: one process COPYs --floor-rows of the rows trackyard stored in the 1-process
  ingest run into a table LIKE a log segment, --floor-batch rows per committed
  transaction: rows/s and PostgreSQL µs per row.

PostgreSQL CPU counts the backends whose application_name is this run's (every URL of the
run carries it) plus the server's shared background processes (WAL writer, checkpointer,
autovacuum), from /proc, shown apart: other work on the same server shows up only there.
Parallel query workers, which live for one query, are not seen.
Every process is stopped by its PID at the end, on errors, Ctrl-C and SIGTERM too; every
schema is dropped. The exit status is 1 when a check (the ingest target, 2 processes not
slower than 1, integrity) is not met.

    .venv/bin/python bench/scale.py [--postgres URL] [--seconds 10] [--backlog 200000]
        [--partitions 2] [--analyze-backlog] [--env KEY=VALUE] [--json]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import psycopg
from psycopg import sql

import delivery
import ingest
import procs
import report
from payload import batch_body, templates
from stored import PostgresCounter, settled
from trackyard.store.archive import ARCHIVE_CONSUMER
from trackyard.store.base import segment_table
from wrkload import ClosedLoopResult, lua_script, run_wrk, wrk_path

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
EVENTS_PER_REQUEST = 100
MAX_REQUESTS_PER_S = 30_000  # a bound on wrk's requests per phase, far above what a server answers
BACKLOG_RATE = 40_000  # events/s offered while the backlog is stored
WAIT_S = 60.0  # bound on waiting for workers to register and the archive to catch up
TARGET_EVENTS_PER_S = 25_000
NOT_SLOWER = 0.95  # 2 processes "not slower" than 1: within run-to-run noise
WORKER_ENV = {  # given to every process of the run; only the workers use it
    "TRACKYARD_DEFAULT_WAREHOUSE": "off",  # only delivery and the archive writer run in the workers
    "TRACKYARD_ARCHIVE_FILE_MAX_AGE_S": "1",  # the archive catches up on the backlog before the drain
}


@dataclass
class IngestRun:
    processes: int
    seconds: float
    events_per_s: float
    acked_events: int
    stored_events: int
    errors: int
    p99_ms: float  # the worst of the wrk instances
    trackyard_cores: float
    trackyard_us_per_event: float
    cores_per_process: list[float]
    postgres_cores: float
    postgres_us_per_event: float  # this run's backends and the shared background processes
    postgres_background_us_per_event: float  # of which the shared background processes
    wrk_cores: float
    host_cores: float
    every_ack_stored: bool  # stored ≥ acknowledged: wrk's 2xx answers came after the commit
    no_duplicates: bool  # stored rows == distinct (source, messageId)
    resent_dropped: bool  # a batch re-sent to another process is not stored again


@dataclass
class DeliveryRun:
    workers: int
    backlog: int
    delivered: int
    seconds: float
    events_per_s: float
    worker_cores: float
    worker_us_per_event: float
    postgres_us_per_event: float
    postgres_background_us_per_event: float
    sink_cores: float
    host_cores: float
    lease_owners: int  # processes holding the destination's partitions at the end of the drain


@dataclass
class FloorRun:
    rows: int
    mean_row_bytes: float
    batch_rows: int
    seconds: float
    rows_per_s: float
    postgres_us_per_row: float
    postgres_background_us_per_row: float
    client_us_per_row: float


# -- PostgreSQL --------------------------------------------------------------------------
def with_param(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


@contextmanager
def run_schema(base_url: str, app_name: str) -> Iterator[str]:
    """A fresh schema (dropped afterwards) in a URL that names this run's connections."""
    with ingest.postgres_schema(base_url) as url:
        yield with_param(url, "application_name", app_name)


@dataclass(frozen=True)
class PostgresUse:
    """CPU seconds PostgreSQL spent in one phase."""

    backends: float  # the connections of this run
    background: float  # the server's shared processes: WAL writer, checkpointer, autovacuum

    @property
    def total(self) -> float:
        return self.backends + self.background


class PostgresCpu:
    """CPU seconds of the PostgreSQL processes working for this run, by PID, from /proc."""

    def __init__(self, admin_url: str, app_name: str) -> None:
        self.admin_url = admin_url
        self.app_name = app_name

    def snapshot(self) -> dict[int, tuple[bool, float]]:
        """PID → (is one of this run's backends, CPU seconds so far)."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT pid, application_name = %s FROM pg_stat_activity WHERE application_name = %s "
                "OR backend_type NOT IN ('client backend', 'walsender')",
                (self.app_name, self.app_name),
            ).fetchall()
        result = {}
        for pid, ours in rows:
            try:
                result[pid] = (bool(ours), procs.cpu_seconds(pid))
            except OSError:
                continue  # the process ended meanwhile
        return result

    @staticmethod
    def used(before: dict[int, tuple[bool, float]], after: dict[int, tuple[bool, float]]) -> PostgresUse:
        """CPU between two snapshots; a backend that appeared in between counts from its start."""
        spent = {True: 0.0, False: 0.0}
        for pid, (ours, cpu) in after.items():
            spent[ours] += cpu - before.get(pid, (ours, 0.0))[1]
        return PostgresUse(backends=spent[True], background=spent[False])


@dataclass
class Window:
    """CPU counters around one measured phase."""

    pids: list[int]
    started: float
    cpu: list[float]
    postgres: dict[int, tuple[bool, float]]
    host_busy: float

    @classmethod
    def open(cls, pids: list[int], pg: PostgresCpu) -> Window:
        return cls(
            pids,
            time.monotonic(),
            [procs.cpu_seconds(pid) for pid in pids],
            pg.snapshot(),
            procs.host_busy_seconds()[0],
        )

    def close(self, pg: PostgresCpu) -> tuple[list[float], PostgresUse, float, float]:
        """(CPU seconds of each process, PostgreSQL CPU seconds, host busy seconds, elapsed seconds)."""
        cpu = [procs.cpu_seconds(pid) - before for pid, before in zip(self.pids, self.cpu, strict=True)]
        postgres = pg.used(self.postgres, pg.snapshot())
        return cpu, postgres, procs.host_busy_seconds()[0] - self.host_busy, time.monotonic() - self.started


# -- processes ---------------------------------------------------------------------------
def trackyard_env(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    extra = {"TRACKYARD_LOG_LEVEL": "WARNING", **WORKER_ENV, **dict(args.env)}
    return ingest.trackyard_env(data_dir, url, extra)


def start_role(bench: delivery.Bench, role: str, env: dict[str, str], name: str) -> ingest.Server:
    """`trackyard serve --role ROLE` on a free port, ready; `authorization` for the default source."""
    log = bench.tmp / f"{name}.log"
    command = [ingest.TRACKYARD, "serve", "--role", role, "--host", "127.0.0.1"]
    process, port = ingest.launch(bench.processes, command, log, env)
    key = ingest.write_key(env) if role == "ingest" else ""
    return ingest.Server(process, port, ingest.basic_auth(key), log)


def start_many(
    bench: delivery.Bench, role: str, url: str, count: int, args: argparse.Namespace
) -> list[ingest.Server]:
    """`count` processes of `role`; if one fails to start, those already started are stopped
    (before the caller drops the schema under them)."""
    servers: list[ingest.Server] = []
    try:
        for _ in range(count):
            name = f"{role}-{uuid.uuid4().hex[:6]}"  # its data directory and log
            servers.append(start_role(bench, role, trackyard_env(url, bench.tmp / name, args), name))
    except BaseException:
        for server in servers:
            bench.processes.stop(server.process)
        raise
    return servers


def run_wrks(
    bench: delivery.Bench, servers: list[ingest.Server], tag: str, seconds: float, connections: int
) -> list[ClosedLoopResult]:
    """One wrk per server, at once, with the connections split between them."""
    share = max(1, connections // len(servers))
    limit = int(seconds * MAX_REQUESTS_PER_S)
    jobs = []
    for index, server in enumerate(servers):
        script = bench.tmp / f"{tag}{index}.lua"
        lua = lua_script(
            templates(), "/v1/batch", server.authorization, f"{tag}{index}", EVENTS_PER_REQUEST, limit
        )
        script.write_text(lua)
        jobs.append((f"http://127.0.0.1:{server.port}", script))
    pool = ThreadPoolExecutor(len(jobs))
    try:
        futures = [
            pool.submit(run_wrk, target, script, share, seconds, bench.processes.running)
            for target, script in jobs
        ]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # on Ctrl-C the caller stops the wrk processes


# -- ingest ------------------------------------------------------------------------------
def ingest_run(
    bench: delivery.Bench, url: str, count: int, pg: PostgresCpu, args: argparse.Namespace
) -> IngestRun:
    servers = start_many(bench, "ingest", url, count, args)
    try:
        counter = PostgresCounter(url)
        if args.warmup > 0:
            run_wrks(bench, servers, f"{args.run_id}w{count}", args.warmup, args.connections)
        before = settled(counter.rows)
        window = Window.open([s.pid for s in servers], pg)
        results = run_wrks(bench, servers, f"{args.run_id}p{count}", args.seconds, args.connections)
        cpu, postgres, host_busy, elapsed = window.close(pg)
        stored = settled(counter.rows) - before
        resent_dropped = resent_batch_dropped(servers, f"{args.run_id}d{count}", counter)
        no_duplicates = counter.distinct_ids() == counter.rows()
    finally:
        for server in servers:
            bench.processes.stop(server.process)
    duration = max(r.duration_s for r in results)
    acked = sum(r.requests for r in results) * EVENTS_PER_REQUEST
    return IngestRun(
        processes=count,
        seconds=duration,
        events_per_s=stored / duration,
        acked_events=acked,
        stored_events=stored,
        errors=sum(r.errors for r in results),
        p99_ms=max(r.p99_ms for r in results),
        trackyard_cores=sum(cpu) / elapsed,
        trackyard_us_per_event=sum(cpu) * 1e6 / max(stored, 1),
        cores_per_process=[round(c / elapsed, 3) for c in cpu],
        postgres_cores=postgres.total / elapsed,
        postgres_us_per_event=postgres.total * 1e6 / max(stored, 1),
        postgres_background_us_per_event=postgres.background * 1e6 / max(stored, 1),
        wrk_cores=sum(r.cpu_s for r in results) / duration,
        host_cores=host_busy / elapsed,
        every_ack_stored=stored >= acked,
        no_duplicates=no_duplicates,
        resent_dropped=resent_dropped,
    )


def resent_batch_dropped(servers: list[ingest.Server], tag: str, counter: PostgresCounter) -> bool:
    """100 new events to the first process, then those 100 and 50 more to the last: 150 stored."""
    parts = templates()
    before = settled(counter.rows)
    ok = ingest.post_batch(servers[0], batch_body(parts, tag, 1, 100))
    ok = ingest.post_batch(servers[-1], batch_body(parts, tag, 1, 150)) and ok
    return ok and settled(counter.rows) - before == 150


# -- floor -------------------------------------------------------------------------------
def copy_floor(url: str, rows: int, batch_rows: int, pg: PostgresCpu) -> FloorRun:
    """COPY `rows` rows of the first log segment, as COPY text, into a table like it."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        segment = sql.Identifier(segment_table(scalar(url, "SELECT min(id) FROM log_segments")))
        lines = read_rows(conn, segment, rows)
        conn.execute(sql.SQL("CREATE TABLE floor_segment (LIKE {} INCLUDING ALL)").format(segment))
        batches = [b"".join(lines[i : i + batch_rows]) for i in range(0, len(lines), batch_rows)]
        copy_in = sql.SQL("COPY floor_segment FROM STDIN")
        pg_before, client_before = pg.snapshot(), time.process_time()
        started = time.monotonic()
        for data in batches:
            with conn.transaction(), conn.cursor().copy(copy_in) as copy:
                copy.write(data)
        seconds = time.monotonic() - started
        client_cpu = time.process_time() - client_before
        postgres = pg.used(pg_before, pg.snapshot())
    count = max(len(lines), 1)
    return FloorRun(
        rows=len(lines),
        mean_row_bytes=sum(len(line) for line in lines) / count,
        batch_rows=batch_rows,
        seconds=seconds,
        rows_per_s=len(lines) / seconds,
        postgres_us_per_row=postgres.total * 1e6 / count,
        postgres_background_us_per_row=postgres.background * 1e6 / count,
        client_us_per_row=client_cpu * 1e6 / count,
    )


def read_rows(conn: psycopg.Connection, segment: sql.Identifier, rows: int) -> list[bytes]:
    """The rows as COPY text lines (newlines inside values are escaped, so a line is a row)."""
    query = sql.SQL(
        "COPY (SELECT seq, source_id, received_ms, message_id, type, body FROM {} ORDER BY seq LIMIT {}) "
        "TO STDOUT"
    ).format(segment, sql.Literal(rows))
    data = bytearray()
    with conn.cursor().copy(query) as copy:
        for chunk in copy:
            data += chunk
    return [line + b"\n" for line in bytes(data).split(b"\n") if line]


# -- delivery ----------------------------------------------------------------------------
def delivery_run(
    bench: delivery.Bench, sink: str, url: str, workers: int, pg: PostgresCpu, args: argparse.Namespace
) -> DeliveryRun:
    env = trackyard_env(url, bench.tmp / f"cli{workers}", args)
    backlog = store_backlog(bench, sink, url, env, args)
    delivery.reset_sink(sink)
    started = start_many(bench, "worker", url, workers, args)
    try:
        wait_for(lambda: workers_registered(url) >= workers, "the workers to register")
        wait_for(lambda: archive_caught_up(url), "the archive writer to catch up on the backlog")
        sink_before = bench.sink_cpu_s()
        window = Window.open([s.pid for s in started], pg)
        delivery.cli(env, "destination", "enable", "sink")
        stats = delivery.wait_delivered(sink, backlog)
        cpu, postgres, host_busy, elapsed = window.close(pg)
        sink_cpu = bench.sink_cpu_s() - sink_before
        owners = scalar(url, "SELECT count(DISTINCT owner) FROM leases WHERE name LIKE 'destination:%'")
    finally:
        for server in started:
            bench.processes.stop(server.process)
    seconds = max(stats["last"] - stats["first"], 1e-9)
    return DeliveryRun(
        workers=workers,
        backlog=backlog,
        delivered=stats["events"],
        seconds=seconds,
        events_per_s=stats["events"] / seconds,
        worker_cores=sum(cpu) / elapsed,
        worker_us_per_event=sum(cpu) * 1e6 / max(stats["events"], 1),
        postgres_us_per_event=postgres.total * 1e6 / max(stats["events"], 1),
        postgres_background_us_per_event=postgres.background * 1e6 / max(stats["events"], 1),
        sink_cores=sink_cpu / elapsed,
        host_cores=host_busy / elapsed,
        lease_owners=owners,
    )


def store_backlog(
    bench: delivery.Bench, sink: str, url: str, env: dict[str, str], args: argparse.Namespace
) -> int:
    """The disabled destination, then --backlog events through one ingest process; returns rows stored."""
    (server,) = start_many(bench, "ingest", url, 1, args)
    try:
        settings = [f"url={sink}/in", f"batch_size={args.batch_size}", f"partitions={args.partitions}"]
        options = [part for setting in settings for part in ("--setting", setting)]
        delivery.cli(env, "destination", "add", "default", "webhook", "--name", "sink", *options)
        delivery.cli(env, "destination", "disable", "sink")
        key = ingest.write_key(env)
        base = f"http://127.0.0.1:{server.port}"
        delivery.load(base, key, args.backlog, BACKLOG_RATE, bench.tmp, bench.processes)
        stored = settled(PostgresCounter(url).rows)
    finally:
        bench.processes.stop(server.process)
    if args.analyze_backlog:
        analyze_log(url)
    return stored


def analyze_log(url: str) -> None:
    """ANALYZE the log segments, as autovacuum does within a minute (autovacuum_naptime) of a
    segment filling: a backlog stored and drained faster than that is otherwise read with plans
    made without statistics."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        for (segment_id,) in conn.execute("SELECT id FROM log_segments").fetchall():
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(segment_table(segment_id))))


def scalar(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def workers_registered(url: str) -> int:
    return scalar(url, "SELECT count(*) FROM processes WHERE role = 'worker'")


def archive_caught_up(url: str) -> bool:
    head = scalar(url, "SELECT next_seq - 1 FROM log_head")
    position = f"SELECT position FROM consumer_positions WHERE consumer = '{ARCHIVE_CONSUMER}'"
    return scalar(url, position) >= head


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {WAIT_S:.0f} s waiting for {what}")
        time.sleep(0.2)


# -- the whole run -------------------------------------------------------------------------
@dataclass
class Results:
    ingest: list[IngestRun]
    delivery: list[DeliveryRun]
    floor: FloorRun | None


def run_all(bench: delivery.Bench, args: argparse.Namespace) -> Results:
    pg = PostgresCpu(args.postgres, args.app_name)
    began = time.monotonic()

    def say(message: str) -> None:
        ingest.progress(f"[{time.monotonic() - began:5.0f} s] {message}")

    runs: list[IngestRun] = []
    floor = None
    for count in (1, 2):
        say(f"ingest: {count} process(es), {args.seconds:g} s")
        with run_schema(args.postgres, args.app_name) as url:
            runs.append(ingest_run(bench, url, count, pg, args))
            say(f"  {runs[-1].events_per_s:,.0f} events/s")
            if count == 1:
                say(f"floor: COPY of {args.floor_rows:,} stored rows")
                floor = copy_floor(url, args.floor_rows, args.floor_batch, pg)
                say(f"  {floor.rows_per_s:,.0f} rows/s")
    sink = bench.start_sink()
    drains = []
    for workers in (1, 2):
        say(f"delivery: backlog of {args.backlog:,}, {workers} worker(s)")
        with run_schema(args.postgres, args.app_name) as url:
            drains.append(delivery_run(bench, sink, url, workers, pg, args))
            say(f"  {drains[-1].events_per_s:,.0f} events/s")
    return Results(runs, drains, floor)


# -- report --------------------------------------------------------------------------------
def ratio(values: list[float]) -> float | None:
    return values[1] / values[0] if len(values) == 2 and values[0] else None


def comparison_rows(results: Results) -> list[list[str]]:
    """One line per figure: 1 process, 2 processes, 2/1."""
    ingest_figures = [
        ("ingest events/s (durable, deduplicated)", "events_per_s", 0),
        ("ingest trackyard CPU µs/event", "trackyard_us_per_event", 1),
        ("ingest PostgreSQL CPU µs/event", "postgres_us_per_event", 1),
        ("… of which shared background processes", "postgres_background_us_per_event", 1),
        ("ingest trackyard cores", "trackyard_cores", 2),
        ("ingest PostgreSQL cores", "postgres_cores", 2),
        ("ingest wrk cores", "wrk_cores", 2),
        ("ingest host busy cores", "host_cores", 2),
        ("ingest p99 ms (closed loop)", "p99_ms", 1),
    ]
    delivery_figures = [
        ("delivery events/s (batching sink)", "events_per_s", 0),
        ("delivery worker CPU µs/event", "worker_us_per_event", 1),
        ("delivery PostgreSQL CPU µs/event", "postgres_us_per_event", 1),
        ("… of which shared background processes", "postgres_background_us_per_event", 1),
        ("delivery worker cores", "worker_cores", 2),
        ("delivery host busy cores", "host_cores", 2),
        ("delivery processes holding partitions", "lease_owners", 0),
    ]
    lines = []
    for records, figures in ((results.ingest, ingest_figures), (results.delivery, delivery_figures)):
        for label, name, digits in figures:
            values = [float(getattr(record, name)) for record in records]
            lines.append(
                [label, *(report.number(v, digits) for v in values), report.number(ratio(values), 2)]
            )
    return lines


def per_core(results: Results) -> dict[str, float | None]:
    """Events/s one fully busy core sustains for each part: 1 / its CPU per event."""
    best = max(results.ingest, key=lambda run: run.events_per_s, default=None)
    drain = max(results.delivery, key=lambda run: run.events_per_s, default=None)

    def rate(us: float | None) -> float | None:
        return 1e6 / us if us else None

    return {
        "ingest events/s per trackyard core": rate(best.trackyard_us_per_event) if best else None,
        "ingest events/s per PostgreSQL core": rate(best.postgres_us_per_event) if best else None,
        "ingest events/s per core, trackyard and PostgreSQL together": (
            rate(best.trackyard_us_per_event + best.postgres_us_per_event) if best else None
        ),
        "delivered events/s per worker core": rate(drain.worker_us_per_event) if drain else None,
        "COPY rows/s per PostgreSQL core": rate(results.floor.postgres_us_per_row) if results.floor else None,
    }


@dataclass
class Check:
    what: str
    wanted: str
    measured: float | bool | None
    met: bool
    digits: int = 0  # for the table

    def shown(self) -> str:
        if isinstance(self.measured, bool):
            return "yes" if self.measured else "no"
        return report.number(self.measured, self.digits)


def checks(results: Results) -> list[Check]:
    best = max((run.events_per_s for run in results.ingest), default=0.0)
    ingest_ratio = ratio([run.events_per_s for run in results.ingest])
    delivery_ratio = ratio([run.events_per_s for run in results.delivery])
    integrity = all(
        run.every_ack_stored and run.no_duplicates and run.resent_dropped for run in results.ingest
    )
    not_slower = f"not slower (2/1 ≥ {NOT_SLOWER})"
    return [
        Check(
            "PostgreSQL batch ingest",
            f"≥ {TARGET_EVENTS_PER_S:,} events/s",
            best,
            best >= TARGET_EVENTS_PER_S,
        ),
        Check("ingest, 2 processes vs 1", not_slower, ingest_ratio, (ingest_ratio or 0) >= NOT_SLOWER, 2),
        Check("delivery, 2 workers vs 1", not_slower, delivery_ratio, (delivery_ratio or 0) >= NOT_SLOWER, 2),
        Check(
            "every acknowledged event stored, none twice, re-sent batch dropped across processes",
            "yes",
            integrity,
            integrity,
        ),
    ]


def render(meta: dict[str, object], results: Results) -> str:
    floor = results.floor
    best = max((run.events_per_s for run in results.ingest), default=0.0)
    lines = [
        f"trackyard scale-out benchmark on PostgreSQL, {meta['date']}: {meta['cpus']} vCPU {meta['cpu_model']}",
        f"source: {meta['source']}; load average before/after: {meta['loadavg_before']} / {meta['loadavg_after']}",
        f"ingest: /v1/batch × {EVENTS_PER_REQUEST} events, wrk closed loop, {meta['connections']} connections "
        f"split over the processes, {meta['seconds']:g} s after {meta['warmup']:g} s warm-up; delivery: backlog "
        f"{meta['backlog']:,}, webhook batch_size={meta['batch_size']} partitions={meta['partitions']}"
        + (", log ANALYZEd before the drain" if meta["analyze_backlog"] else ""),
        "",
        report.markdown_table(
            ["figure", "1 process", "2 processes", "2/1"], comparison_rows(results), left=1
        ),
        "",
    ]
    if floor is not None:
        floor_lines = [
            ["COPY rows/s", report.number(floor.rows_per_s)],
            ["PostgreSQL CPU µs/row", report.number(floor.postgres_us_per_row, 1)],
            [
                "… of which shared background processes",
                report.number(floor.postgres_background_us_per_row, 1),
            ],
            ["COPY client CPU µs/row", report.number(floor.client_us_per_row, 1)],
            [
                "rows × mean bytes, rows per transaction",
                f"{floor.rows:,} × {floor.mean_row_bytes:,.0f}, {floor.batch_rows:,}",
            ],
            ["best trackyard ingest / floor", report.number(best / floor.rows_per_s, 3)],
        ]
        lines += ["Floor (one process, COPY of the same rows into a table LIKE a log segment):", ""]
        lines += [report.markdown_table(["figure", "value"], floor_lines, left=1), ""]
    core_lines = [[name, report.number(value)] for name, value in per_core(results).items()]
    lines += [
        "Per core (1 / CPU per event; ingest: the best of 1 and 2 processes; delivery: the faster drain):",
        "",
        report.markdown_table(["figure", "events/s"], core_lines, left=1),
        "",
    ]
    check_lines = [[c.what, c.wanted, c.shown(), "yes" if c.met else "**no**"] for c in checks(results)]
    lines += ["Checks:", "", report.markdown_table(["check", "wanted", "measured", "met"], check_lines)]
    return "\n".join(lines)


def metadata(args: argparse.Namespace, started: float, loadavg_before: str) -> dict[str, object]:
    meta = report.metadata(args, started, ingest.busy_cores(1.0))
    meta.update(
        connections=args.connections,
        backlog=args.backlog,
        batch_size=args.batch_size,
        partitions=args.partitions,
        analyze_backlog=args.analyze_backlog,
        loadavg_before=loadavg_before,
        loadavg_after=loadavg(),
    )
    return meta


# -- main ----------------------------------------------------------------------------------
def loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(ingest.POSTGRES_ENV, DEFAULT_POSTGRES),
        metavar="URL",
        help=f"PostgreSQL server (default ${ingest.POSTGRES_ENV}, else {DEFAULT_POSTGRES})",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured ingest phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="closed-loop warm-up before it")
    parser.add_argument("--connections", type=int, default=ingest.CONNECTIONS, help="wrk connections in all")
    parser.add_argument("--backlog", type=int, default=200_000, help="events stored before the drain")
    parser.add_argument("--batch-size", type=int, default=1000, help="the webhook destination's batch_size")
    parser.add_argument("--partitions", type=int, default=2, help="the webhook destination's partitions")
    parser.add_argument(
        "--analyze-backlog",
        action="store_true",
        help="ANALYZE the log after storing each backlog, as autovacuum would in a running deployment",
    )
    parser.add_argument("--floor-rows", type=int, default=100_000, help="rows the floor COPYs")
    parser.add_argument(
        "--floor-batch",
        type=int,
        default=3_200,
        help="rows per floor transaction (default: the most trackyard's group commit gathers "
        "from 32 connections × 100 events)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=ingest.env_pair,
        metavar="KEY=VALUE",
        help="extra environment for the trackyard processes, for A/B runs (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(reps=1)  # report.metadata's field: one run, no medians
    args = parser.parse_args(argv)
    args.run_id = uuid.uuid4().hex[:6]
    args.app_name = f"trackyard-scale-{args.run_id}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk_path() is None:
        ingest.progress(
            "wrk is not installed: `apt-get install -y wrk` (the Makefile's bench target does it)"
        )
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C: stop every process, drop schemas
    started, before = time.time(), loadavg()
    with tempfile.TemporaryDirectory(prefix="trackyard-scale-") as tmp:
        bench = delivery.Bench(Path(tmp))
        try:
            results = run_all(bench, args)
        finally:
            bench.processes.stop_all()
    meta = metadata(args, started, before)
    if args.json:
        payload = {
            "meta": meta,
            "results": asdict(results),
            "per_core": per_core(results),
            "checks": [asdict(check) for check in checks(results)],
        }
        sys.stdout.buffer.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(meta, results))
    return 0 if all(check.met for check in checks(results)) else 1


if __name__ == "__main__":
    sys.exit(main())
