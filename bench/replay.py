"""Archive and replay benchmark.

Writes --events realistic events (bench/payload.py, ~770 B) into a fresh embedded store
with receivedAt spread over one day a month ago, then measures, in one run:

* archive: the archive writer catching up with the whole log (read the log, zstd -3,
  fsync, publish, list): events/s, against the 30,000 events/s of ingest it must keep up with;
* floor: decompress-and-parse of the same archive files alone (zstd stream + orjson.loads
  of every line), the ceiling of any replay;
* read: the replay's history reader alone (decompress, split lines, positions, receivedAt);
* replay: `trackyard replay` as a user runs it, to bench/sink.py through a Webhook
  destination batching 1000 events a request: events/s delivered (process wall time,
  start-up included) and the replay process's peak RSS, for the last 10 % of the range and
  for all of it (memory must not grow with the range).

    .venv/bin/python bench/replay.py [--events 1000000] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

import payload
import procs
from trackyard.archive.history import History, Range, file_lines
from trackyard.archive.retention import RetentionPolicy, drop_expired_segments
from trackyard.archive.storage import FileSystemStorage
from trackyard.archive.writer import ArchiveOptions, ArchiveWriter
from trackyard.spec import format_ms, now_ms
from trackyard.store import LogRecord
from trackyard.store.sqlite import SQLiteStore

BENCH = Path(__file__).resolve().parent
TRACKYARD = str(Path(sys.executable).parent / "trackyard")
DAY_MS = 86_400_000
SPAN_MS = DAY_MS  # one file per hour at least, cut further every 500,000 events
INGEST_TARGET = 30_000
DELIVERY_TARGET = 30_000


@dataclass
class Phase:
    name: str
    events: int
    seconds: float
    peak_rss_mb: float | None = None
    cpu_s: float | None = None

    @property
    def cpu_us_per_event(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s / self.events * 1e6

    @property
    def per_s(self) -> float:
        return self.events / self.seconds


def stored_bodies(source_id: int, first: int, count: int, start_ms: int, step_ms: float) -> list[LogRecord]:
    """Events as the store holds them (normalised, with receivedAt), numbered from `first`."""
    rng = random.Random(first)
    records = []
    for index in range(first, first + count):
        event = payload.make_event(rng, index)
        received = start_ms + int(index * step_ms)
        event["messageId"] = f"bench-{index:012d}"
        event["receivedAt"] = format_ms(received)
        event["originalTimestamp"] = event["timestamp"]
        records.append(LogRecord(source_id, str(event["messageId"]), received, "track", orjson.dumps(event)))
    return records


def build_history(store: SQLiteStore, count: int, start_ms: int) -> int:
    """`count` events received evenly over SPAN_MS from `start_ms`."""
    source = store.create_source("default", "bench-write-key")
    step = SPAN_MS / count
    for first in range(0, count, 100_000):
        batch = stored_bodies(source.id, first, min(100_000, count - first), start_ms, step)
        for offset in range(0, len(batch), 1000):
            store.append(batch[offset : offset + 1000])
    return source.id


def measure_archive(store: SQLiteStore, storage: FileSystemStorage) -> Phase:
    writer = ArchiveWriter(store, storage, ArchiveOptions(checkpoint_events=500_000))
    started, cpu = time.perf_counter(), time.process_time()
    archived = writer.catch_up()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    writer.release()
    return Phase("archive (log → zstd files)", archived, seconds, cpu_s=cpu)


def measure_floor(store: SQLiteStore, storage: FileSystemStorage, source_id: int) -> Phase:
    files = store.archive_files(source_id, limit=100_000)
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    for listed in files:
        for line in file_lines(storage, listed.key):
            orjson.loads(line)
            count += 1
    return Phase(
        "floor: decompress + parse", count, time.perf_counter() - started, cpu_s=time.process_time() - cpu
    )


def measure_read(store: SQLiteStore, storage: FileSystemStorage, source_id: int) -> Phase:
    head = store.head()
    history = History(store, storage, Range(source_id, log_from=head, last_seq=head))
    started, cpu = time.perf_counter(), time.process_time()
    count = sum(len(batch) for batch in history.batches(0))
    return Phase(
        "read: history reader", count, time.perf_counter() - started, cpu_s=time.process_time() - cpu
    )


def sink_stats(sink: str) -> dict:
    with urllib.request.urlopen(f"{sink}/stats", timeout=10) as response:
        return json.loads(response.read())


def reset_sink(sink: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{sink}/reset", method="POST"), timeout=10).read()


def measure_replay(data_dir: Path, sink: str, since: str | None, name: str) -> Phase:
    """`trackyard replay` in a child process, its peak RSS sampled from /proc while it runs."""
    reset_sink(sink)
    env = {**os.environ, "TRACKYARD_DATA_DIR": str(data_dir)}
    command = [TRACKYARD, "replay", "--destination", "bench", "--json"] + (
        ["--since", since] if since else []
    )
    log = data_dir / "replay.log"
    started = time.perf_counter()
    with open(log, "wb") as output:
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        peak = 0.0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            with contextlib.suppress(OSError, RuntimeError):
                peak = max(peak, procs.peak_rss_mb(child.pid))
            time.sleep(0.05)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"trackyard replay failed: {procs.log_tail(log)}")
    summary = orjson.loads(log.read_bytes().splitlines()[-1])
    delivered = sink_stats(sink)["events"]
    if delivered != summary["delivered"] or summary["failed"]:
        raise RuntimeError(f"the sink counted {delivered} events, the replay says {summary}")
    return Phase(name, delivered, seconds, peak, usage.ru_utime + usage.ru_stime)


def run(events: int) -> list[Phase]:
    processes = procs.Processes()
    with tempfile.TemporaryDirectory(prefix="trackyard-bench-replay-") as tmp:
        data_dir = Path(tmp) / "data"
        store = SQLiteStore(data_dir / "trackyard.db", synchronous="NORMAL", segment_rows=200_000)
        store.migrate()
        storage = FileSystemStorage(data_dir / "archive")
        try:
            print(f"writing {events:,} events into the log …", file=sys.stderr)
            start = now_ms() - 30 * DAY_MS
            source_id = build_history(store, events, start)
            phases = [measure_archive(store, storage)]
            drop_expired_segments(store, RetentionPolicy(hours=0, keep_segments=1), now_ms())
            phases += [measure_floor(store, storage, source_id), measure_read(store, storage, source_id)]

            port = procs.free_port()
            log = Path(tmp) / "sink.log"
            sink_process = processes.start([sys.executable, str(BENCH / "sink.py"), "--port", str(port)], log)
            sink = f"http://127.0.0.1:{port}"
            procs.wait_ready(f"{sink}/stats", sink_process, log)
            settings = {"url": f"{sink}/events", "batch_size": 1000, "concurrency": 4}
            store.create_destination(source_id, "webhook", "bench", settings)
            last_tenth = format_ms(start + SPAN_MS * 9 // 10)
            phases.append(measure_replay(data_dir, sink, last_tenth, "replay, last 10 % of the range"))
            phases.append(measure_replay(data_dir, sink, None, "replay, the whole range"))
        finally:
            processes.stop_all()
            store.close()
    return phases


def report(phases: list[Phase], events: int, load: tuple[float, float]) -> str:
    archive, floor, read, tenth, whole = phases
    lines = [
        f"host: {os.cpu_count()} cores, load average {load[0]:.1f} at the start and {load[1]:.1f} at the end",
        f"events: {events:,} (mean {sum(t.size for t in payload.templates()) // 100} B), one source, received over 24 h",
        "",
        "| phase | events | seconds | events/s | CPU µs/event | events per CPU second | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in phases:
        rss = f"{phase.peak_rss_mb:.0f} MB" if phase.peak_rss_mb else "–"
        cpu = phase.cpu_us_per_event
        lines.append(
            f"| {phase.name} | {phase.events:,} | {phase.seconds:.1f} | {phase.per_s:,.0f} | "
            f"{cpu:.1f} | {1e6 / cpu:,.0f} | {rss} |"
            if cpu
            else f"| {phase.name} | {phase.events:,} | {phase.seconds:.1f} | {phase.per_s:,.0f} | – | – | {rss} |"
        )
    lines += [
        "",
        f"archive keeps up with {INGEST_TARGET:,} events/s of ingest: {'yes' if archive.per_s >= INGEST_TARGET else 'NO'} "
        f"({archive.per_s / INGEST_TARGET:.1f}x)",
        f"replay ≥ {DELIVERY_TARGET:,} events/s delivered: {'yes' if whole.per_s >= DELIVERY_TARGET else 'NO'} "
        f"({whole.per_s / floor.per_s:.0%} of the decompress-and-parse floor; the reader alone "
        f"{read.per_s / floor.per_s:.0%})",
        f"memory flat: peak RSS {tenth.peak_rss_mb:.0f} MB for {tenth.events:,} events, "
        f"{whole.peak_rss_mb:.0f} MB for {whole.events:,}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print the phases as JSON")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    phases = run(args.events)
    load = (load_before, os.getloadavg()[0])
    if args.json:
        print(
            json.dumps(
                [{**asdict(p), "per_s": p.per_s, "cpu_us_per_event": p.cpu_us_per_event} for p in phases],
                indent=2,
            )
        )
    else:
        print(report(phases, args.events, load))


if __name__ == "__main__":
    main()
