"""The storage suites' engines (SQLite, PostgreSQL) for the archive's store-level tests."""

from tests.store.conftest import engine, store

__all__ = ["engine", "store"]
