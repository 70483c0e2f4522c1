"""serve's warehouse runner leaves ingest the CPU at its peak: while ingest is busy, a full
batch waiting no longer starts a sync at once; the interval still does."""

from __future__ import annotations

import asyncio
from pathlib import Path

from trackyard.store import LogRecord
from trackyard.store.sqlite import SQLiteStore
from trackyard.warehouse.registry import builtin
from trackyard.warehouse.runner import WarehouseRunner


def append(store: SQLiteStore, source_id: int, first: int, count: int) -> None:
    store.append(
        [
            LogRecord(source_id, f"m{i}", 1, "track", b'{"type":"track","event":"e","userId":"u"}')
            for i in range(first, first + count)
        ]
    )


def test_a_full_batch_waits_for_the_interval_only_while_ingest_is_busy(tmp_path: Path):
    store = SQLiteStore(tmp_path / "trackyard.db")
    store.migrate()
    source = store.create_source("web", "k1")
    busy = [False]
    runner = WarehouseRunner(store, builtin(tmp_path), 3600.0, 10, ingest_busy=lambda: busy[0])
    try:
        append(store, source.id, 0, 5)
        (config,) = runner._due()  # never synced: due at once
        asyncio.run(runner._sync(config))
        append(store, source.id, 5, 10)  # a full batch waits

        busy[0] = True
        assert runner._due() == []
        busy[0] = False
        assert [due.name for due in runner._due()] == [config.name]
    finally:
        store.close()
