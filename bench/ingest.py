"""Ingest benchmark: trackyard's collection API against a bare-ASGI floor, on this machine.

Starts `trackyard serve` on a fresh data directory (embedded SQLite, and PostgreSQL with
--postgres), and bench/floor.py (uvicorn with the same settings, a body read and a fixed
200). For each scenario, /v1/batch with 100 events per request and /v1/t with one, it
measures, on one fresh server per scenario:

* peak: closed loop, wrk -t1 -c32 for --seconds; events/s counted in the store afterwards
  (durable, deduplicated), req/s and latency from wrk, server CPU from /proc/<pid>/stat;
* a dedupe check: re-sent messageIds must not be stored again;
* half the peak rate: open loop at a fixed rate (bench/loadgen.py), p50/p99 from the due
  time of each request;
* peak RSS (VmHWM) of the server.

Every process it starts is stopped by its PID at the end, on errors and interrupts too.
The results and the method are in docs/performance.md.

    .venv/bin/python bench/ingest.py [--seconds 10] [--reps 1] [--postgres URL] [--json]
        [--profile FILE [--profile-flags=--native]] [--env KEY=VALUE] [--wait-idle SECONDS]
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

import procs
import report
from payload import batch_body, templates
from stored import Counter, PostgresCounter, SQLiteCounter, settled
from wrkload import ClosedLoopResult, lua_script, run_wrk, wrk_path

BENCH = Path(__file__).resolve().parent
TRACKYARD = str(Path(sys.executable).parent / "trackyard")
CONNECTIONS = 32
POSTGRES_ENV = "TRACKYARD_BENCH_DATABASE_URL"
IDLE_CORES = 0.3


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    events: int  # events per request
    max_rate: int  # requests/s bound: caps the requests of one phase at seconds × max_rate


SCENARIOS = {
    "batch": Scenario("batch", "/v1/batch", 100, 30_000),
    "single": Scenario("single", "/v1/t", 1, 200_000),
}


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "sqlite", "postgres" or "floor"
    database_url: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # extra environment of trackyard servers


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    authorization: str
    log: Path
    counter: Counter | None = None  # None for the floor, which stores nothing

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Peak:
    events_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    acked_events: int
    stored_events: int
    server_us_per_req: float
    server_us_per_event: float
    server_cores: float  # serve and its parser and writer processes
    helper_cores: float  # of which the parser and writer processes
    loop_thread_cores: float  # the server's main thread: the event loop (HTTP, validation, commits)
    loadgen_cores: float
    host_cores: float
    postgres_cores: float


@dataclass
class HalfRate:
    offered_rps: float
    achieved_rps: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    failed: int
    acked_events: int
    stored_events: int
    loadgen_cores: float


@dataclass
class Outcome:
    target: str
    scenario: str
    rep: int
    peak: Peak | None = None
    half: HalfRate | None = None
    dedupe_ok: bool | None = None
    peak_rss_mb: float | None = None  # serve and its parser and writer processes, each at its own peak
    children_peak_rss_mb: float | None = None  # serve's background child (warehouse loader, archive)
    stored_total: int | None = None
    distinct_total: int | None = None
    rss_growth_bytes_per_event: float | None = None
    thread_cores: dict[str, float] | None = None  # per thread id, during the peak
    busy_before: float | None = None  # cores the rest of the machine kept busy just before the start
    error: str | None = None


# -- servers ---------------------------------------------------------------------------
def trackyard_env(data_dir: Path, database_url: str | None, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a server: none of ours TRACKYARD_* but its data dir, URL and --env pairs."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRACKYARD_")}
    env.update(extra)
    env["TRACKYARD_DATA_DIR"] = str(data_dir)
    if database_url:
        env["TRACKYARD_DATABASE_URL"] = database_url
    return env


def write_key(env: dict[str, str]) -> str:
    listing = subprocess.run(
        [TRACKYARD, "source", "list", "--json"], env=env, capture_output=True, check=True, timeout=60
    )
    return str(orjson.loads(listing.stdout.splitlines()[0])["write_key"])


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def launch(
    processes: procs.Processes, command: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start `command` + `--port N` on a free port and wait for /health; retry on another port if
    the server dies at once (on a shared machine a port can be taken between choice and bind)."""
    for attempt in range(3):
        port = procs.free_port()
        process = processes.start([*command, "--port", str(port)], log, env)
        try:
            procs.wait_ready(f"http://127.0.0.1:{port}/health", process, log)
            return process, port
        except RuntimeError:
            processes.stop(process)
            if attempt == 2 or "already in use" not in procs.log_tail(log):
                raise
    raise AssertionError("unreachable")


def start_trackyard(processes: procs.Processes, target: Target, tmp: Path) -> Server:
    data_dir = tmp / "data"
    env = trackyard_env(data_dir, target.database_url, dict(target.env))
    log = tmp / "serve.log"
    process, port = launch(processes, [TRACKYARD, "serve", "--host", "127.0.0.1"], log, env)
    try:
        key = write_key(env)
    except BaseException:
        processes.stop(process)
        raise
    counter: Counter
    if target.kind == "sqlite":
        counter = SQLiteCounter(data_dir / "trackyard.db")
    else:
        assert target.database_url is not None
        counter = PostgresCounter(target.database_url)
    return Server(process, port, basic_auth(key), log, counter)


def start_floor(processes: procs.Processes, tmp: Path) -> Server:
    log = tmp / "floor.log"
    process, port = launch(processes, [sys.executable, str(BENCH / "floor.py")], log)
    return Server(process, port, basic_auth("floor"), log)


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema for one server, in the URL as its search_path; dropped afterwards."""
    import psycopg

    schema = f"ty_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def running(processes: procs.Processes, target: Target) -> Iterator[Server]:
    """A fresh server for `target`, stopped by its PID on the way out (before its schema is dropped)."""
    with tempfile.TemporaryDirectory(prefix="trackyard-bench-") as tmp, ExitStack() as stack:
        if target.kind == "postgres":
            assert target.database_url is not None
            url = stack.enter_context(postgres_schema(target.database_url))
            target = Target(target.name, target.kind, url, target.env)
        if target.kind == "floor":
            server = start_floor(processes, Path(tmp))
        else:
            server = start_trackyard(processes, target, Path(tmp))
        try:
            yield server
        finally:
            processes.stop(server.process)


# -- phases ----------------------------------------------------------------------------
@dataclass
class Window:
    """CPU counters around one phase."""

    started: float
    server_cpu: float
    helper_cpu: dict[int, float]
    loop_cpu: float
    threads_cpu: dict[int, float]
    host_busy: float
    postgres_cpu: float

    @classmethod
    def open(cls, server: Server, with_postgres: bool) -> Window:
        return cls(
            time.monotonic(),
            procs.cpu_seconds(server.pid),
            {pid: procs.cpu_seconds(pid) for pid in procs.ingest_helpers_of(server.pid)},
            procs.main_thread_cpu_seconds(server.pid),
            procs.thread_cpu_seconds(server.pid),
            procs.host_busy_seconds()[0],
            procs.cpu_seconds_of("postgres") if with_postgres else 0.0,
        )

    def server_cpu_s(self, server: Server) -> float:
        """CPU seconds of serve and its parser and writer processes since the window opened."""
        return procs.cpu_seconds(server.pid) - self.server_cpu + self.helper_cpu_s(server)

    def helper_cpu_s(self, server: Server) -> float:
        return sum(
            procs.cpu_seconds(pid) - self.helper_cpu.get(pid, 0.0)
            for pid in procs.ingest_helpers_of(server.pid)
        )

    def thread_cores(self, server: Server) -> dict[str, float]:
        """Cores used by each thread (by thread id) since the window opened, busiest first."""
        elapsed = time.monotonic() - self.started
        now = procs.thread_cpu_seconds(server.pid)
        used = {tid: (cpu - self.threads_cpu.get(tid, 0.0)) / elapsed for tid, cpu in now.items()}
        return {str(tid): round(c, 3) for tid, c in sorted(used.items(), key=lambda x: -x[1]) if c >= 0.005}

    def cores(self, server: Server, with_postgres: bool) -> dict[str, float]:
        """Cores used since the window opened: server, its event-loop thread, host, PostgreSQL."""
        elapsed = time.monotonic() - self.started
        loop = procs.main_thread_cpu_seconds(server.pid) - self.loop_cpu
        host = procs.host_busy_seconds()[0] - self.host_busy
        pg = procs.cpu_seconds_of("postgres") - self.postgres_cpu if with_postgres else 0.0
        return {
            "server_cores": self.server_cpu_s(server) / elapsed,
            "helper_cores": self.helper_cpu_s(server) / elapsed,
            "loop_thread_cores": loop / elapsed,
            "host_cores": host / elapsed,
            "postgres_cores": pg / elapsed,
        }


def wrk_phase(
    processes: procs.Processes, server: Server, scenario: Scenario, tag: str, seconds: float, tmp: Path
) -> ClosedLoopResult:
    script = tmp / f"{tag}.lua"
    per_request = scenario.events if scenario.name == "batch" else 0
    limit = int(seconds * scenario.max_rate)
    script.write_text(lua_script(templates(), scenario.path, server.authorization, tag, per_request, limit))
    return run_wrk(f"http://127.0.0.1:{server.port}", script, CONNECTIONS, seconds, processes.running)


def stored_now(server: Server) -> int:
    return settled(server.counter.rows) if server.counter is not None else 0


def peak_phase(
    processes: procs.Processes,
    server: Server,
    scenario: Scenario,
    tag: str,
    seconds: float,
    tmp: Path,
    with_postgres: bool,
) -> tuple[Peak, dict[str, float]]:
    before = stored_now(server)
    window = Window.open(server, with_postgres)
    result = wrk_phase(processes, server, scenario, tag, seconds, tmp)
    cores = window.cores(server, with_postgres)
    threads = window.thread_cores(server)
    server_cpu = window.server_cpu_s(server)
    acked = result.requests * scenario.events
    stored = stored_now(server) - before if server.counter is not None else acked
    return Peak(
        events_per_s=stored / result.duration_s,
        requests_per_s=result.requests / result.duration_s,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        acked_events=acked,
        stored_events=stored,
        server_us_per_req=server_cpu * 1e6 / max(result.requests, 1),
        server_us_per_event=server_cpu * 1e6 / max(stored, 1),
        loadgen_cores=result.cpu_s / result.duration_s,
        **cores,
    ), threads


def post_batch(server: Server, body: bytes) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/batch",
        data=body,
        headers={"Authorization": server.authorization, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status == 200


def dedupe_check(server: Server, tag: str) -> bool:
    """Send 100 new events, then the same 100 again with 50 more: only 100 + 50 may be stored."""
    parts = templates()
    first = batch_body(parts, tag, 1, 100)
    again = batch_body(parts, tag, 1, 150)
    before = stored_now(server)
    ok = post_batch(server, first)
    middle = stored_now(server)
    ok = post_batch(server, again) and ok
    after = stored_now(server)
    return ok and middle - before == 100 and after - middle == 50


def half_rate_phase(
    processes: procs.Processes, server: Server, scenario: Scenario, tag: str, rate: float, seconds: float
) -> HalfRate:
    before = stored_now(server)
    runs = loadgen_runs(processes, server, scenario, tag, rate, seconds)
    latencies = sorted(value for run in runs for value in run["latencies_us"])
    ok = sum(run["ok"] for run in runs)
    duration = max(run["duration_s"] for run in runs)
    stored = stored_now(server) - before
    return HalfRate(
        offered_rps=rate,
        achieved_rps=ok / duration,
        events_per_s=stored / duration,
        p50_ms=report.percentile(latencies, 50) / 1000,
        p99_ms=report.percentile(latencies, 99) / 1000,
        failed=sum(run["failed"] for run in runs),
        acked_events=ok * scenario.events,
        stored_events=stored,
        loadgen_cores=sum(run["cpu_s"] for run in runs) / duration,
    )


def loadgen_runs(
    processes: procs.Processes, server: Server, scenario: Scenario, tag: str, rate: float, seconds: float
) -> list[dict]:
    """One open-loop generator process, two when one Python process could not keep the rate."""
    count = 2 if rate * max(1, scenario.events // 25) > 4000 else 1
    started = []
    for index in range(count):
        report = Path(tempfile.gettempdir()) / f"trackyard-loadgen-{os.getpid()}-{tag}g{index}.json"
        command = [
            sys.executable,
            str(BENCH / "loadgen.py"),
            f"--port={server.port}",
            f"--path={scenario.path}",
            f"--events={scenario.events if scenario.name == 'batch' else 0}",
            f"--rate={rate / count}",
            f"--seconds={seconds}",
            f"--max-requests={int(seconds * scenario.max_rate)}",
            f"--connections={CONNECTIONS}",
            f"--authorization={server.authorization}",
            f"--tag={tag}g{index}",
            f"--report={report}",
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.running.append(process)
        started.append((process, report))
    return [_collect(processes, process, report, seconds + 60) for process, report in started]


def _collect(
    processes: procs.Processes, process: subprocess.Popen[bytes], report: Path, timeout: float
) -> dict:
    try:
        _, errors = process.communicate(timeout=timeout)
    finally:
        processes.stop(process)
    if process.returncode != 0:
        raise RuntimeError(f"loadgen failed ({process.returncode}): {errors.decode()[-800:]}")
    try:
        return orjson.loads(report.read_bytes())
    finally:
        report.unlink(missing_ok=True)


# -- one scenario on one target ------------------------------------------------------------
def run_one(
    processes: procs.Processes, target: Target, scenario: Scenario, rep: int, args: argparse.Namespace
) -> Outcome:
    outcome = Outcome(target.name, scenario.name, rep)
    tag = f"{args.run_id}{rep}{scenario.name[0]}{target.kind[0]}"
    progress(f"rep {rep}: {scenario.name} × {target.name}")
    outcome.busy_before = wait_until_idle(args.wait_idle)
    try:
        with running(processes, target) as server, tempfile.TemporaryDirectory() as tmp:
            measure(processes, server, target, scenario, tag, args, outcome, Path(tmp))
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        progress(f"  FAILED: {outcome.error}")
    return outcome


def measure(
    processes: procs.Processes,
    server: Server,
    target: Target,
    scenario: Scenario,
    tag: str,
    args: argparse.Namespace,
    outcome: Outcome,
    tmp: Path,
) -> None:
    with_pg = target.kind == "postgres"
    if args.warmup > 0:
        wrk_phase(processes, server, scenario, tag + "w", args.warmup, tmp)
    rss_warm, stored_warm = ingest_rss_mb(server), stored_now(server)
    profiler = start_profiler(processes, server, args, target, scenario, tmp)
    outcome.peak, outcome.thread_cores = peak_phase(
        processes, server, scenario, tag + "p", args.seconds, tmp, with_pg
    )
    finish_profiler(processes, profiler, args)
    progress(f"  peak: {outcome.peak.events_per_s:,.0f} events/s, {outcome.peak.requests_per_s:,.0f} req/s")
    if server.counter is not None:
        outcome.dedupe_ok = dedupe_check(server, tag + "d")
        rate = outcome.peak.requests_per_s / 2
        outcome.half = half_rate_phase(processes, server, scenario, tag + "h", rate, args.seconds)
        progress(f"  half rate {rate:,.0f} req/s: p99 {outcome.half.p99_ms:.1f} ms")
        outcome.stored_total = stored_now(server)
        outcome.distinct_total = server.counter.distinct_ids()
        growth = (ingest_rss_mb(server) - rss_warm) * 2**20
        outcome.rss_growth_bytes_per_event = growth / max(outcome.stored_total - stored_warm, 1)
    if server.process.poll() is not None:
        raise RuntimeError(f"the server died: {procs.log_tail(server.log)}")
    outcome.peak_rss_mb = sum(
        procs.peak_rss_mb(pid) for pid in [server.pid, *procs.ingest_helpers_of(server.pid)]
    )
    outcome.children_peak_rss_mb = sum(procs.peak_rss_mb(pid) for pid in procs.background_of(server.pid))


# -- profiling (optional, needs py-spy) ----------------------------------------------------
def ingest_rss_mb(server: Server) -> float:
    """Resident memory now of serve and its parser and writer processes."""
    return sum(procs.rss_mb(pid) for pid in [server.pid, *procs.ingest_helpers_of(server.pid)])


def start_profiler(
    processes: procs.Processes,
    server: Server,
    args: argparse.Namespace,
    target: Target,
    scenario: Scenario,
    tmp: Path,
) -> subprocess.Popen[bytes] | None:
    if not args.profile or target.kind != "sqlite" or args.profiled:
        return None
    py_spy = Path(sys.executable).parent / "py-spy"
    command = [str(py_spy), "record", "--pid", str(server.pid), "--duration", str(int(args.seconds))]
    command += ["--rate", "100", "--format", "raw", "--threads", "--full-filenames"]
    command += ["--output", str(args.profile)]
    command += args.profile_flags.split()
    args.profiled = True
    return processes.start(command, tmp / "py-spy.log")


def finish_profiler(
    processes: procs.Processes, profiler: subprocess.Popen[bytes] | None, args: argparse.Namespace
) -> None:
    if profiler is None:
        return
    try:
        profiler.wait(60)
    finally:
        processes.stop(profiler)
    progress(f"  profile written to {args.profile}")


# -- main ------------------------------------------------------------------------------
def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="closed-loop warm-up before the peak")
    parser.add_argument("--reps", type=int, default=1, help="repetitions; the table shows medians")
    parser.add_argument("--scenarios", default="batch,single", help="comma-separated: batch, single")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(POSTGRES_ENV),
        metavar="URL",
        help=f"also run trackyard on this PostgreSQL (default ${POSTGRES_ENV})",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the bare-ASGI floor")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=env_pair,
        metavar="KEY=VALUE",
        help="extra environment for the trackyard servers, for A/B runs (repeatable)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help=f"before each scenario, wait up to this long for other work to drop below {IDLE_CORES} cores",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy raw profile of the first SQLite peak (of the first of --scenarios)",
    )
    parser.add_argument(
        "--profile-flags", default="", help="more py-spy record flags, e.g. '--native' or '--gil'"
    )
    args = parser.parse_args(argv)
    args.run_id = uuid.uuid4().hex[:6]
    args.profiled = False
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def targets(args: argparse.Namespace) -> list[Target]:
    env = tuple(args.env)
    result = [Target("trackyard sqlite", "sqlite", None, env)]
    if args.postgres:
        result.append(Target("trackyard postgres", "postgres", args.postgres, env))
    if not args.no_floor:
        result.append(Target("floor (bare ASGI)", "floor"))
    return result


def run_all(processes: procs.Processes, args: argparse.Namespace) -> list[Outcome]:
    outcomes = []
    for rep in range(1, args.reps + 1):
        for name in args.scenarios.split(","):
            for target in targets(args):
                outcomes.append(run_one(processes, target, SCENARIOS[name], rep, args))
    return outcomes


def busy_cores(seconds: float) -> float:
    """How many cores the machine keeps busy over `seconds`, before the benchmark adds anything."""
    busy, _ = procs.host_busy_seconds()
    time.sleep(seconds)
    return (procs.host_busy_seconds()[0] - busy) / seconds


def wait_until_idle(timeout_s: float, threshold: float = IDLE_CORES) -> float:
    """Wait (at most `timeout_s`) until other work leaves the cores idle; return the last busy figure."""
    deadline = time.monotonic() + timeout_s
    busy = busy_cores(1.0)
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_cores(1.0)
    if busy > threshold:
        progress(f"  warning: {busy:.2f} cores busy with other work; this result will be noisy")
    return busy


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk_path() is None:
        progress("wrk is not installed: `apt-get install -y wrk` (the Makefile's bench target does it)")
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    processes = procs.Processes()
    started = time.time()
    idle = busy_cores(1.0)
    try:
        outcomes = run_all(processes, args)
    finally:
        processes.stop_all()
    summary = report.summarise(outcomes, [t.name for t in targets(args)])
    meta = report.metadata(args, started, idle)
    if args.json:
        payload = {"meta": meta, "summary": summary, "runs": [asdict(o) for o in outcomes]}
        sys.stdout.buffer.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(report.render(meta, summary))
    if args.profile and args.profiled:
        profiled = next((o for o in outcomes if o.thread_cores and o.scenario == "batch"), None)
        progress(report.hotspot_text(args.profile, (profiled.thread_cores or {}) if profiled else {}))
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
