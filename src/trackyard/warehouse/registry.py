"""Configured warehouses and their sync status, kept in the store (tables `warehouses` and
`warehouse_status`, migration 3 of both engines).

Portable SQL over the store's two primitives, `_transaction()` and `_query()`, as
store/delivery.py does for the delivery tables. The built-in DuckDB warehouse of a
serving process (`DATA_DIR/warehouse.duckdb`) is not a row: its path is local to each
machine, so every process derives it from its own data directory (`builtin`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from trackyard.spec import now_ms
from trackyard.store import Store
from trackyard.warehouse.errors import WarehouseError

BUILTIN_NAME = "default"
BUILTIN_FILE = "warehouse.duckdb"
DEFAULT_BATCH_EVENTS = 250_000


@dataclass(frozen=True)
class WarehouseConfig:
    name: str
    dialect: str
    settings: dict[str, Any]
    created_ms: int = 0
    builtin: bool = False

    @property
    def consumer(self) -> str:
        """The warehouse's name among the log's consumers (for lag and retention)."""
        return f"warehouse:{self.name}"


@dataclass
class WarehouseStatus:
    last_sync_ms: int | None = None
    events_loaded: int = 0
    rows_loaded: int = 0
    last_error: str | None = None
    last_error_ms: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        """The last attempt failed (an error newer than the last successful sync)."""
        return self.last_error_ms is not None and self.last_error_ms >= (self.last_sync_ms or 0)


@dataclass
class SyncResult:
    """What one sync of one warehouse did."""

    name: str
    events: int = 0
    rows: int = 0
    batches: int = 0
    position: int = 0
    head: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def builtin(data_dir: Path) -> WarehouseConfig:
    return WarehouseConfig(BUILTIN_NAME, "duckdb", {"path": str(data_dir / BUILTIN_FILE)}, builtin=True)


class Warehouses:
    """The warehouse tables of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, name: str, dialect: str, settings: dict[str, Any]) -> WarehouseConfig:
        if name == BUILTIN_NAME or self._query("SELECT 1 FROM warehouses WHERE name = ?", (name,)):
            raise WarehouseError(
                f"a warehouse named {name!r} already exists (see `trackyard warehouse list`)"
            )
        with self.store._transaction() as cur:
            cur.execute(
                "INSERT INTO warehouses (name, dialect, settings, created_ms) VALUES (?, ?, ?, ?)",
                (name, dialect, orjson.dumps(settings).decode(), now_ms()),
            )
        return self.get(name)

    def configured(self) -> list[WarehouseConfig]:
        rows = self._query("SELECT name, dialect, settings, created_ms FROM warehouses ORDER BY id")
        return [WarehouseConfig(r[0], r[1], orjson.loads(r[2]), int(r[3])) for r in rows]

    def get(self, name: str) -> WarehouseConfig:
        for config in self.configured():
            if config.name == name:
                return config
        raise WarehouseError(f"no warehouse named {name!r} (see `trackyard warehouse list`)")

    def status(self, name: str) -> WarehouseStatus:
        rows = self._query(
            "SELECT last_sync_ms, events_loaded, rows_loaded, last_error, last_error_ms, warnings "
            "FROM warehouse_status WHERE name = ?",
            (name,),
        )
        if not rows:
            return WarehouseStatus()
        r = rows[0]
        return WarehouseStatus(r[0], int(r[1]), int(r[2]), r[3], r[4], orjson.loads(r[5]))

    def record_sync(self, name: str, events: int, rows: int, warnings: list[str]) -> None:
        """A successful sync: counts add up; warnings are those of this sync (if any)."""
        with self.store._transaction() as cur:
            cur.execute(
                "INSERT INTO warehouse_status (name, last_sync_ms, events_loaded, rows_loaded, warnings) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET last_sync_ms = excluded.last_sync_ms, "
                "events_loaded = warehouse_status.events_loaded + excluded.events_loaded, "
                "rows_loaded = warehouse_status.rows_loaded + excluded.rows_loaded, "
                "warnings = CASE WHEN excluded.warnings = '[]' THEN warehouse_status.warnings "
                "ELSE excluded.warnings END",
                (name, now_ms(), events, rows, orjson.dumps(warnings[-20:]).decode()),
            )

    def record_error(self, name: str, error: str) -> None:
        with self.store._transaction() as cur:
            cur.execute(
                "INSERT INTO warehouse_status (name, last_error, last_error_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last_error = excluded.last_error, "
                "last_error_ms = excluded.last_error_ms",
                (name, error[:2000], now_ms()),
            )

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.store._query(sql, params)
