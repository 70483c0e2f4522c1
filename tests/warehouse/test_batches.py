"""Loads in many batches (each prepared on the loader's thread while the previous one loads)
give the tables one load gives, and `tracks` filled from the staged event tables holds
exactly what extracting it from the events would, in both dialects."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from tests.warehouse.conftest import Log, Target, track
from trackyard.warehouse.loader import Loader
from trackyard.warehouse.registry import WarehouseConfig


def stream() -> list[dict[str, Any]]:
    """Events whose tables change from batch to batch: new properties, widening, an event
    without a table of its own, and a context field that is a timestamp for one event and a
    word for another (so `tracks` holds it as varchar, the event table as a timestamp)."""
    events = []
    for n in range(12):
        events.append(
            track("Order Completed", {"total": n if n < 6 else n + 0.5, "coupon": f"c{n}"}, f"o{n}")
        )
        events.append(track("Signed Up", {"plan": "pro", f"extra{n % 3}": True}, f"s{n}"))
    events.append(track("🙂", {"mood": "good"}, "emoji-1"))
    events.append(track("Order Completed", {"total": 1}, "when-1", context={"when": "2026-11-28T10:00:00Z"}))
    events.append(track("Signed Up", {"plan": "free"}, "when-2", context={"when": "soon"}))
    return events


def rows(target: Target, table: str) -> dict[str, dict[str, Any]]:
    """The rows of a table by id, each as column → value, without the load time."""
    names = list(target.columns("default", table))
    columns = ", ".join(f'"{name}"' for name in names)
    values = target.query(f'SELECT {columns} FROM "default"."{table}"')
    return {row[0]: {n: v for n, v in zip(names, row, strict=True) if n != "uuid_ts"} for row in values}


def test_many_small_batches_load_what_one_batch_loads(log: Log, target: Target, tmp_path: Path):
    log.append(stream())
    reference = Target("duckdb", {"path": str(tmp_path / "reference.duckdb")})
    single = reference.sync(log)
    batched = target.sync(log, batch_events=4)

    assert (batched.events, batched.rows) == (single.events, single.rows) == (27, 53)
    assert batched.batches == 7
    for table in ("tracks", "order_completed", "signed_up"):
        assert rows(target, table) == rows(reference, table)
    assert target.columns("default", "order_completed")["total"] == "float"


def test_tracks_holds_each_value_as_the_events_sent_it(log: Log, target: Target):
    log.append(stream())
    target.sync(log)

    assert target.columns("default", "order_completed")["context_when"] == "timestamp"
    assert target.columns("default", "signed_up")["context_when"] == "varchar"
    assert target.columns("default", "tracks")["context_when"] == "varchar"
    tracks = rows(target, "tracks")
    assert tracks["when-1"]["context_when"] == "2026-11-28T10:00:00Z"
    assert tracks["when-2"]["context_when"] == "soon"
    assert tracks["emoji-1"]["event_text"] == "🙂"
    assert tracks["emoji-1"]["event"] is None
    assert tracks["o7"]["event"] == "order_completed"
    assert len(tracks) == 27


def test_the_batch_engine_of_serve_is_bounded_and_single_threaded(log: Log, tmp_path: Path):
    config = WarehouseConfig("test", "duckdb", {"path": str(tmp_path / "warehouse.duckdb")})
    # DuckDB shows limits in MiB: 512 MB (serve's batches of 25,000) and 1000 MB (the CLI's 250,000)
    for batch_events, memory_limit, threads in (
        (25_000, "488.2 MiB", 1),
        (250_000, "953.6 MiB", os.cpu_count()),
    ):
        engine = Loader(log.store, config, batch_events=batch_events)._engine()
        try:
            settings = engine.execute(
                "SELECT current_setting('memory_limit'), current_setting('threads')"
            ).fetchall()[0]
        finally:
            engine.close()
        assert settings == (memory_limit, threads)


def test_the_next_batch_is_prepared_on_one_thread_and_loaded_on_all(log: Log, tmp_path: Path, monkeypatch):
    """While a batch loads, the next one is shaped by an engine of one thread (two engines of
    a thread per core each would oversubscribe the cores); it loads with all of them."""
    from trackyard.warehouse.batch import LogBatch

    seen: dict[str, list[int]] = {"prepared": [], "loaded": []}
    shapes, load = LogBatch.shapes, Loader._load

    def threads(batch: LogBatch) -> int:
        return int(batch.conn.execute("SELECT current_setting('threads')").fetchall()[0][0])

    def shaping(batch: LogBatch) -> Any:
        seen["prepared"].append(threads(batch))
        return shapes(batch)

    def loading(loader: Loader, session: Any, batch: LogBatch, position: int) -> Any:
        seen["loaded"].append(threads(batch))
        return load(loader, session, batch, position)

    monkeypatch.setattr(LogBatch, "shapes", shaping)
    monkeypatch.setattr(Loader, "_load", loading)
    log.append(stream())
    config = WarehouseConfig("test", "duckdb", {"path": str(tmp_path / "warehouse.duckdb")})
    loader = Loader(log.store, config, batch_events=10)
    monkeypatch.setattr(loader, "engine", type(loader.engine)(loader.engine.memory_limit, 2))
    result = loader.sync()

    assert (result.error, result.batches) == (None, 3)
    assert seen["loaded"] == [2, 2, 2]
    assert 1 in seen["prepared"]  # the batches after the first were prepared ahead


def test_the_next_batch_is_read_on_one_reader_thread_for_every_sync(log: Log, tmp_path: Path, monkeypatch):
    """The read of the next batch runs beside the load, on one thread that outlives each sync:
    the store connection it opens is opened once, not once per sync."""
    reads: list[str] = []
    read = Loader._read

    def reading(loader: Loader, position: int, until: int) -> Any:
        reads.append(threading.current_thread().name)
        return read(loader, position, until)

    monkeypatch.setattr(Loader, "_read", reading)
    config = WarehouseConfig("test", "duckdb", {"path": str(tmp_path / "warehouse.duckdb")})
    connections = []
    for round_ in range(3):
        log.append([track("Signed Up", {"plan": "pro"}, f"s{round_}-{n}") for n in range(30)])
        result = Loader(log.store, config, batch_events=10).sync()
        assert (result.error, result.events) == (None, 30)
        connections.append(len(log.store._connections))

    # each sync reads its first batch itself, and the next two on the reader thread
    assert sorted(reads) == ["MainThread"] * 3 + ["warehouse-reader_0"] * 6
    assert connections[0] == connections[1] == connections[2]
