"""Warehouse administration for the CLI, the JSON API and the UI: add, list, sync, status, tables.

Functions take a store and plain values and return plain data. `builtin` is the serving
process's own DuckDB warehouse (registry.builtin), or None when it is switched off.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trackyard.spec import format_ms
from trackyard.store import Store
from trackyard.warehouse.dialects import DIALECTS, dialect_for
from trackyard.warehouse.errors import WarehouseError
from trackyard.warehouse.registry import (
    BUILTIN_NAME,
    DEFAULT_BATCH_EVENTS,
    SyncResult,
    WarehouseConfig,
    Warehouses,
)

SYNC_LOCK_TIMEOUT_S = 120.0  # a serving process may be loading the same warehouse
TABLES_LOCK_TIMEOUT_S = 5.0  # how long listing tables waits for a load holding a DuckDB file
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")


def add_warehouse(
    store: Store, dialect: str, name: str, *, url: str | None = None, path: str | None = None
) -> WarehouseConfig:
    """Check that the warehouse can be reached, then add it; it loads the whole log from the start."""
    if not _NAME.match(name):
        raise WarehouseError(
            f"warehouse name {name!r} is invalid: use 1–63 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if name == BUILTIN_NAME:
        raise WarehouseError(f"{BUILTIN_NAME!r} is the built-in DuckDB warehouse; choose another name")
    settings = _settings(dialect, url, path)
    dialect_for(dialect, settings).ping()
    return Warehouses(store).add(name, dialect, settings)


def _settings(dialect: str, url: str | None, path: str | None) -> dict[str, Any]:
    if dialect == "postgres":
        if not url or not url.startswith(("postgresql://", "postgres://")):
            raise WarehouseError(
                "a PostgreSQL warehouse needs --url postgresql://user:password@host:port/database"
            )
        return {"url": url}
    if dialect == "duckdb":
        if not path:
            raise WarehouseError("a DuckDB warehouse needs --path FILE (e.g. --path analytics.duckdb)")
        return {"path": str(Path(path).expanduser().resolve())}
    raise WarehouseError(f"unknown warehouse dialect {dialect!r}: use one of {', '.join(DIALECTS)}")


def configured(store: Store, builtin: WarehouseConfig | None) -> list[WarehouseConfig]:
    """Every warehouse this process loads: the built-in one first, then those added."""
    return ([builtin] if builtin else []) + Warehouses(store).configured()


def find(store: Store, builtin: WarehouseConfig | None, name: str) -> WarehouseConfig:
    for config in configured(store, builtin):
        if config.name == name:
            return config
    raise WarehouseError(f"no warehouse named {name!r} (see `trackyard warehouse list`)")


def describe(config: WarehouseConfig) -> dict[str, Any]:
    """A warehouse as it may be shown: where it is, without secrets."""
    return {
        "name": config.name,
        "dialect": config.dialect,
        "target": dialect_for(config.dialect, config.settings).describe(),
        "builtin": config.builtin,
        "created": format_ms(config.created_ms) if config.created_ms else None,
    }


def list_warehouses(store: Store, builtin: WarehouseConfig | None) -> list[dict[str, Any]]:
    return [describe(config) for config in configured(store, builtin)]


def sync(
    store: Store,
    builtin: WarehouseConfig | None,
    name: str | None = None,
    batch_events: int = DEFAULT_BATCH_EVENTS,
    on_batch: Callable[[SyncResult], None] | None = None,
) -> list[SyncResult]:
    """Load everything pending into one warehouse or all, waiting for a loader that holds one."""
    from trackyard.warehouse.loader import Loader  # DuckDB and Arrow load only when needed

    targets = [find(store, builtin, name)] if name else configured(store, builtin)
    return [
        Loader(store, config, batch_events, lock_timeout_s=SYNC_LOCK_TIMEOUT_S).sync(on_batch=on_batch)
        for config in targets
    ]


def status(store: Store, builtin: WarehouseConfig | None) -> list[dict[str, Any]]:
    """Per warehouse: last sync, events and rows loaded, lag behind the log, last error."""
    head = store.head()
    registry = Warehouses(store)
    rows = []
    for config in configured(store, builtin):
        state = registry.status(config.name)
        position = store.get_position(config.consumer) or 0
        rows.append(
            {
                **describe(config),
                "last_sync": format_ms(state.last_sync_ms) if state.last_sync_ms else None,
                "events_loaded": state.events_loaded,
                "rows_loaded": state.rows_loaded,
                "position": position,
                "lag": max(0, head - position),
                "failing": state.failing,
                "last_error": state.last_error,
                "last_error_at": format_ms(state.last_error_ms) if state.last_error_ms else None,
                "warnings": state.warnings,
            }
        )
    return rows


def warehouse_tables(store: Store, builtin: WarehouseConfig | None, name: str) -> list[dict[str, Any]]:
    """The tables of one warehouse's source schemas with their row counts, by schema then table."""
    config = find(store, builtin, name)
    dialect = dialect_for(config.dialect, config.settings, lock_timeout_s=TABLES_LOCK_TIMEOUT_S)
    schemas = {source.slug for source in store.list_sources()}
    return [dataclasses.asdict(table) for table in sorted(dialect.tables(schemas))]
