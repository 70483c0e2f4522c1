"""Warehouse benchmark: the loader against a bulk-load floor, on this machine.

Stores N track events (20 event names, 5–30 properties each, browser context) in a
fresh SQLite store, then for each dialect measures, each phase in its own process (so
peak RSS is the phase's own):

* loader: `trackyard.warehouse` loading the whole log into an empty warehouse
  (read the log, flatten, type, create tables, insert, commit), in batches of
  `--batch-events` (the CLI's default);
* floor: the same rows, already flattened and held as Python lists (read back from the
  loader's DuckDB warehouse, untimed), bulk-loaded directly into empty tables: DuckDB
  from Arrow (Arrow build + INSERT), PostgreSQL by COPY (psycopg write_row, one
  transaction). The floor does no JSON, no schema discovery and no deduplication.

Rates are per stored event (one event writes two rows: `tracks` and its event table);
the table rows per second are printed too, and the CPU time of the measuring process
(all its threads; for PostgreSQL the server's own CPU is not included) per event.

    .venv/bin/python bench/warehouse.py [--events 1000000] [--reps 1] [--batch-events 250000]
                                        [--postgres URL | --no-postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from trackyard.warehouse.registry import DEFAULT_BATCH_EVENTS

BENCH = Path(__file__).resolve().parent
EVENT_NAMES = 20
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
_USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)


# -- the events ---------------------------------------------------------------------------
def event_catalog(rng: random.Random) -> list[tuple[str, list[tuple[str, str]]]]:
    """20 event names, each with 5–30 properties of a fixed kind (string, int, float, bool, time)."""
    kinds = ("string", "string", "integer", "float", "boolean", "timestamp")
    catalog = []
    for index in range(EVENT_NAMES):
        name = f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS).title()} {index}"
        properties = [
            (f"prop{p}{rng.choice(_WORDS).title()}", rng.choice(kinds)) for p in range(rng.randint(5, 30))
        ]
        catalog.append((name, properties))
    return catalog


def property_value(rng: random.Random, kind: str) -> object:
    if kind == "string":
        return f"{rng.choice(_WORDS)}-{rng.randrange(1000)}"
    if kind == "integer":
        return rng.randrange(100_000)
    if kind == "float":
        return round(rng.uniform(0, 1000), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    return f"2026-11-{rng.randint(1, 28):02d}T{rng.randrange(24):02d}:00:00.000Z"


def stored_event(rng: random.Random, catalog: list, number: int) -> dict:
    name, properties = catalog[number % len(catalog)]
    path = f"/{name.lower().replace(' ', '-')}"
    context: dict = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {
            "path": path,
            "referrer": "",
            "search": "",
            "title": name,
            "url": f"https://shop.example{path}",
        },
        "userAgent": rng.choice(_USER_AGENTS),
        "ip": f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "locale": "en-US",
    }
    if number % 3 == 0:
        context["campaign"] = {"name": "autumn-sale", "source": "newsletter", "medium": "email"}
    return {
        "type": "track",
        "event": name,
        "userId": f"user-{rng.randrange(1_000_000):07d}",
        "anonymousId": f"{rng.getrandbits(128):032x}",
        "messageId": f"bench-{number:012d}",
        "properties": {key: property_value(rng, kind) for key, kind in properties},
        "context": context,
        "integrations": {"All": True},
        "receivedAt": "2026-11-28T10:00:05.300Z",
        "sentAt": "2026-11-28T10:00:00.120Z",
        "originalTimestamp": "2026-11-28T10:00:00.000Z",
        "timestamp": "2026-11-28T10:00:05.180Z",
        "channel": "browser",
    }


def build_store(path: Path, events: int) -> None:
    from trackyard.store import LogRecord
    from trackyard.store.sqlite import SQLiteStore

    rng = random.Random(42)
    catalog = event_catalog(rng)
    store = SQLiteStore(path, synchronous="OFF")
    store.migrate()
    source = store.create_source("bench", "bench-write-key")
    for first in range(0, events, 10_000):
        chunk = [stored_event(rng, catalog, n) for n in range(first, min(events, first + 10_000))]
        store.append([LogRecord(source.id, e["messageId"], 0, "track", orjson.dumps(e)) for e in chunk])
    store.close()


# -- phases, each run in its own process ----------------------------------------------------
def phase_loader(store_path: str, dialect: str, target: str, batch_events: str) -> dict:
    from trackyard.store.sqlite import SQLiteStore
    from trackyard.warehouse.loader import Loader
    from trackyard.warehouse.registry import WarehouseConfig

    settings = {"path": target} if dialect == "duckdb" else {"url": target}
    store = SQLiteStore(store_path)
    started, cpu = time.perf_counter(), time.process_time()
    result = Loader(store, WarehouseConfig("bench", dialect, settings), int(batch_events)).sync()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.error:
        raise SystemExit(f"loader failed: {result.error}")
    return {"seconds": seconds, "cpu": cpu, "events": result.events, "rows": result.rows}


def flattened_tables(warehouse: str) -> dict[str, tuple[list, list[list]]]:
    """Every table of the loaded warehouse as (Arrow schema fields, Python column lists)."""
    import duckdb

    conn = duckdb.connect(warehouse, read_only=True)
    tables = {}
    for (name,) in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'bench' ORDER BY 1"
    ).fetchall():
        arrow = conn.sql(f'SELECT * FROM bench."{name}"').to_arrow_table()
        tables[name] = (list(arrow.schema), [column.to_pylist() for column in arrow.columns])
    conn.close()
    return tables


def phase_floor_duckdb(warehouse: str, target: str) -> dict:
    import duckdb
    import pyarrow as pa

    tables = flattened_tables(warehouse)
    conn = duckdb.connect(target)
    started, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for name, (fields, columns) in tables.items():
        arrow = pa.table(
            [pa.array(values, field.type) for field, values in zip(fields, columns, strict=True)],
            schema=pa.schema(fields),
        )
        conn.register("flat", arrow)
        conn.execute(f'CREATE TABLE "{name}" AS SELECT * FROM flat').fetchall()
        conn.unregister("flat")
        rows += arrow.num_rows
    conn.execute("CHECKPOINT").fetchall()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    return {"seconds": seconds, "cpu": cpu, "rows": rows}


def phase_floor_postgres(warehouse: str, url: str) -> dict:
    import psycopg

    pg_types = {
        "string": "varchar",
        "int64": "bigint",
        "double": "double precision",
        "bool": "boolean",
        "timestamp[us]": "timestamp",
    }
    tables = flattened_tables(warehouse)
    rows = 0
    with psycopg.connect(url) as conn:
        for name, (fields, _) in tables.items():
            columns = ", ".join(f'"{f.name}" {pg_types[str(f.type)]}' for f in fields)
            conn.execute(f'CREATE TABLE "{name}" ({columns})')
        conn.commit()
        started, cpu = time.perf_counter(), time.process_time()
        with conn.cursor() as cursor:
            for name, (fields, columns) in tables.items():
                names = ", ".join(f'"{f.name}"' for f in fields)
                with cursor.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
                    for row in zip(*columns, strict=True):
                        copy.write_row(row)
                        rows += 1
        conn.commit()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu": cpu, "rows": rows}


def run_phase(*args: str) -> dict:
    """Run a phase in a fresh process; its result plus its own peak RSS."""
    output = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--phase", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if output.returncode != 0:
        raise SystemExit(f"phase {args[0]} failed:\n{output.stderr}")
    return orjson.loads(output.stdout.strip().splitlines()[-1])


def fresh_database(admin_url: str) -> tuple[str, str]:
    import psycopg

    name = f"ty_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def rates(loader: dict, floor: dict, events: int) -> dict:
    return {
        "loader": events / loader["seconds"],
        "loader_rows": loader["rows"] / loader["seconds"],
        "loader_rss": loader["rss_mb"],
        "loader_cpu_us": loader["cpu"] / events * 1e6,
        "floor": events / floor["seconds"],
        "floor_rows": floor["rows"] / floor["seconds"],
        "floor_rss": floor["rss_mb"],
        "floor_cpu_us": floor["cpu"] / events * 1e6,
        "ratio": floor["seconds"] / loader["seconds"],
    }


def report(label: str, runs: list[dict]) -> None:
    """One line per repetition, then the medians (the ratio is the median of per-repetition ratios)."""
    for index, run in enumerate(runs, start=1):
        print(f"{label:<10} rep {index}: {line(run)}")
    if len(runs) > 1:
        print(
            f"{label:<10} median: {line({key: statistics.median(r[key] for r in runs) for key in runs[0]})}"
        )


def line(run: dict) -> str:
    return (
        f"loader {run['loader']:>7,.0f} events/s ({run['loader_rows']:>7,.0f} rows/s, "
        f"{run['loader_cpu_us']:.1f} µs CPU/event, peak RSS {run['loader_rss']:,.0f} MB)   "
        f"floor {run['floor']:>7,.0f} events/s ({run['floor_rows']:>7,.0f} rows/s, "
        f"{run['floor_cpu_us']:.1f} µs CPU/event, peak RSS {run['floor_rss']:,.0f} MB)   "
        f"loader/floor {run['ratio']:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=1, help="loader and floor alternate this many times")
    parser.add_argument("--postgres", default=ADMIN_URL, help="a PostgreSQL URL that may CREATE DATABASE")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--batch-events",
        type=int,
        default=DEFAULT_BATCH_EVENTS,
        help="events per load (the CLI's default; serve uses TRACKYARD_WAREHOUSE_BATCH_EVENTS=25000)",
    )
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        phases = {
            "loader": phase_loader,
            "floor-duckdb": phase_floor_duckdb,
            "floor-postgres": phase_floor_postgres,
        }
        result = phases[name](*rest)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["rss_mb"] = usage.ru_maxrss / 1024
        print(orjson.dumps(result).decode())
        return
    work = Path(tempfile.mkdtemp(prefix="ty-bench-warehouse-"))
    try:
        store = work / "trackyard.db"
        started = time.perf_counter()
        build_store(store, args.events)
        print(f"stored {args.events:,} track events in {time.perf_counter() - started:.0f} s")
        print(
            f"DuckDB {duckdb_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
            f"batches of {args.batch_events:,} events"
        )
        report("DuckDB", [duckdb_rep(work, store, args) for _ in range(args.reps)])
        if not args.no_postgres:
            report("PostgreSQL", [postgres_rep(work, store, args) for _ in range(args.reps)])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def duckdb_rep(work: Path, store: Path, args: argparse.Namespace) -> dict:
    warehouse, floor_file = work / "loader.duckdb", work / "floor.duckdb"
    for path in (warehouse, floor_file, work / "loader.duckdb.wal", work / "floor.duckdb.wal"):
        path.unlink(missing_ok=True)
    loader = run_phase("loader", str(store), "duckdb", str(warehouse), str(args.batch_events))
    floor = run_phase("floor-duckdb", str(warehouse), str(floor_file))
    return rates(loader, floor, args.events)


def postgres_rep(work: Path, store: Path, args: argparse.Namespace) -> dict:
    loader_db, loader_url = fresh_database(args.postgres)
    floor_db, floor_url = fresh_database(args.postgres)
    try:
        loader = run_phase("loader", str(store), "postgres", loader_url, str(args.batch_events))
        floor = run_phase("floor-postgres", str(work / "loader.duckdb"), floor_url)
    finally:
        drop_database(args.postgres, loader_db)
        drop_database(args.postgres, floor_db)
    return rates(loader, floor, args.events)


def duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


if __name__ == "__main__":
    main()
