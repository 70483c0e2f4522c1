"""Storage: the interface and its two engines. `open_store` picks one from the configuration."""

from __future__ import annotations

from pathlib import Path

from trackyard.store.base import (
    AppendResult,
    FailureRecord,
    LogRecord,
    Segment,
    Source,
    SourceExists,
    SourceNotFound,
    Store,
    StoredEvent,
    StoredFailure,
    StoreError,
    StoreUnavailable,
)


def open_store(database_url: str | None, data_dir: Path, **options: int | str) -> Store:
    """PostgreSQL when `database_url` is a postgresql:// URL, else SQLite in `data_dir`."""
    if database_url and database_url.startswith(("postgresql://", "postgres://")):
        from trackyard.store.postgres import PostgresStore

        return PostgresStore(database_url, **options)  # type: ignore[arg-type]
    from trackyard.store.sqlite import SQLiteStore

    return SQLiteStore(Path(data_dir) / "trackyard.db", **options)  # type: ignore[arg-type]


__all__ = [
    "AppendResult",
    "FailureRecord",
    "LogRecord",
    "Segment",
    "Source",
    "SourceExists",
    "SourceNotFound",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "StoredFailure",
    "open_store",
]
