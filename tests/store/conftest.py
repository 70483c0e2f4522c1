"""Fixtures shared by the storage suites: one store per engine (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trackyard.store import Store
from trackyard.store.postgres import PostgresStore
from trackyard.store.sqlite import SQLiteStore


@dataclass
class Engine:
    """Opens (and migrates) stores of one engine on one location; closes them at teardown."""

    name: str
    factory: Callable[..., Store]
    sqlite_path: Path | None = None

    def __post_init__(self) -> None:
        self.opened: list[Store] = []

    def open(self, **options: int) -> Store:
        store = self.factory(**options)
        self.opened.append(store)
        store.migrate()
        return store


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        path = tmp_path / "trackyard.db"
        engine = Engine("sqlite", lambda **options: SQLiteStore(path, **options), sqlite_path=path)
    else:
        url = request.getfixturevalue("pg_url")
        engine = Engine("postgres", lambda **options: PostgresStore(url, **options))
    yield engine
    for store in engine.opened:
        store.close()


@pytest.fixture
def store(engine: Engine) -> Store:
    return engine.open()
