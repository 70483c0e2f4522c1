"""Delivery benchmark: events ingested through the collection API, delivered to a local sink.

Starts a fresh `trackyard serve` (embedded SQLite) per scenario and bench/sink.py, a
fast sink that counts events and measures now − receivedAt for each. Scenarios:

* batching: a Webhook destination with batch_size 1000. A backlog of --events events is
  ingested while the destination is off; it is switched on and the drain is timed at the
  sink: delivered events/s.
* single: the same with batch_size 1 and 32 concurrent requests (one request per event).
* latency: a batching destination switched on while events arrive open-loop at --rate
  events/s (100 per request) for --seconds: end-to-end p50/p99 from receivedAt to the
  sink, while ingest continues.

Each prints the server's peak RSS and CPU seconds.

    .venv/bin/python bench/delivery.py [--events 300000] [--single-events 30000] [--rate 1000] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import procs

BENCH = Path(__file__).resolve().parent
TRACKYARD = str(Path(sys.executable).parent / "trackyard")
DRAIN_TIMEOUT_S = 600.0


@dataclass
class Result:
    scenario: str
    events: int
    delivered_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    server_peak_rss_mb: float
    server_cpu_s: float
    sink_cpu_s: float
    seconds: float


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes = procs.Processes()

    def start_sink(self) -> str:
        port = procs.free_port()
        log = self.tmp / "sink.log"
        self.sink = self.processes.start([sys.executable, str(BENCH / "sink.py"), "--port", str(port)], log)
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(f"{url}/stats", self.sink, log)
        return url

    def sink_cpu_s(self) -> float:
        return procs.cpu_seconds(self.sink.pid)

    def start_trackyard(self, name: str) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
        data = self.tmp / name
        data.mkdir()
        env = {**_clean_env(), "TRACKYARD_DATA_DIR": str(data), "TRACKYARD_LOG_LEVEL": "WARNING"}
        port = procs.free_port()
        log = self.tmp / f"{name}.log"
        process = self.processes.start([TRACKYARD, "serve", "--port", str(port)], log, env)
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(f"{url}/health", process, log)
        return process, url, env


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TRACKYARD_")}


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([TRACKYARD, *args], env=env, check=True, capture_output=True, text=True).stdout


def write_key(env: dict[str, str]) -> str:
    return json.loads(cli(env, "source", "list", "--json").splitlines()[0])["write_key"]


def sink_stats(sink: str) -> dict:
    with urllib.request.urlopen(f"{sink}/stats", timeout=10) as response:
        return json.loads(response.read())


def reset_sink(sink: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{sink}/reset", method="POST"), timeout=10).read()


def load(url: str, key: str, events: int, rate_events: float, tmp: Path, processes: procs.Processes) -> int:
    """Send `events` through /v1/batch (100 per request) at `rate_events` per second; returns events acked."""
    port = url.rsplit(":", 1)[1]
    requests = max(1, events // 100)
    rate = rate_events / 100
    seconds = requests / rate
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    command = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        "--port",
        port,
        "--path",
        "/v1/batch",
        "--events",
        "100",
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        "--max-requests",
        str(requests),
        "--connections",
        "16",
        "--authorization",
        auth,
        "--tag",
        uuid.uuid4().hex[:8],
    ]
    output = subprocess.run(command, check=True, capture_output=True, timeout=seconds + 120).stdout
    report = json.loads(output)
    if report["failed"]:
        raise RuntimeError(f"{report['failed']} load requests failed")
    return int(report["ok"]) * 100


def wait_delivered(sink: str, expected: int) -> dict:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        stats = sink_stats(sink)
        if stats["events"] >= expected:
            return stats
        time.sleep(0.25)
    raise RuntimeError(f"only {sink_stats(sink)['events']} of {expected} events reached the sink")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drain_scenario(bench: Bench, sink: str, name: str, events: int, settings: list[str]) -> Result:
    """Backlog first, then switch the destination on and time the drain at the sink."""
    process, url, env = bench.start_trackyard(name)
    args = ["destination", "add", "default", "webhook", "--name", "sink", "--setting", f"url={sink}/in"]
    for setting in settings:
        args += ["--setting", setting]
    cli(env, *args)
    cli(env, "destination", "disable", "sink")
    time.sleep(1.5)
    sent = load(url, write_key(env), events, 40_000, bench.tmp, bench.processes)
    reset_sink(sink)
    cpu_before, sink_before = procs.cpu_seconds(process.pid), bench.sink_cpu_s()
    cli(env, "destination", "enable", "sink")
    stats = wait_delivered(sink, sent)
    cpu = procs.cpu_seconds(process.pid) - cpu_before
    sink_cpu = bench.sink_cpu_s() - sink_before
    rss = procs.peak_rss_mb(process.pid)
    bench.processes.stop(process)
    elapsed = max(stats["last"] - stats["first"], 1e-9)
    return Result(name, sent, sent / elapsed, None, None, rss, cpu, sink_cpu, elapsed)


def latency_scenario(bench: Bench, sink: str, rate: float, seconds: float) -> Result:
    process, url, env = bench.start_trackyard("latency")
    cli(
        env,
        "destination",
        "add",
        "default",
        "webhook",
        "--name",
        "sink",
        "--setting",
        f"url={sink}/in",
        "--setting",
        "batch_size=1000",
    )
    time.sleep(1.5)
    reset_sink(sink)
    cpu_before, sink_before = procs.cpu_seconds(process.pid), bench.sink_cpu_s()
    sent = load(url, write_key(env), int(rate * seconds), rate, bench.tmp, bench.processes)
    stats = wait_delivered(sink, sent)
    cpu = procs.cpu_seconds(process.pid) - cpu_before
    sink_cpu = bench.sink_cpu_s() - sink_before
    rss = procs.peak_rss_mb(process.pid)
    bench.processes.stop(process)
    latencies = stats["latencies_ms"]
    elapsed = max(stats["last"] - stats["first"], 1e-9)
    return Result(
        "latency",
        sent,
        sent / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        rss,
        cpu,
        sink_cpu,
        elapsed,
    )


def print_table(results: list[Result]) -> None:
    print(
        f"{'scenario':<10} {'events':>8} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>7} "
        f"{'CPU s':>6} {'sink s':>6} {'s':>6}"
    )
    for r in results:
        p50 = f"{r.p50_ms:.0f}" if r.p50_ms is not None else "-"
        p99 = f"{r.p99_ms:.0f}" if r.p99_ms is not None else "-"
        print(
            f"{r.scenario:<10} {r.events:>8} {r.delivered_per_s:>12,.0f} {p50:>8} {p99:>8} "
            f"{r.server_peak_rss_mb:>7.0f} {r.server_cpu_s:>6.1f} {r.sink_cpu_s:>6.1f} {r.seconds:>6.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000, help="backlog for the batching scenario")
    parser.add_argument("--single-events", type=int, default=30_000, help="backlog for one request per event")
    parser.add_argument("--rate", type=float, default=1000, help="events/s for the latency scenario")
    parser.add_argument("--seconds", type=float, default=20, help="duration of the latency scenario")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trackyard-bench-") as tmp:
        bench = Bench(Path(tmp))
        try:
            sink = bench.start_sink()
            results = [
                drain_scenario(bench, sink, "batching", args.events, ["batch_size=1000"]),
                drain_scenario(bench, sink, "single", args.single_events, ["batch_size=1", "concurrency=32"]),
                latency_scenario(bench, sink, args.rate, args.seconds),
            ]
        finally:
            bench.processes.stop_all()
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
