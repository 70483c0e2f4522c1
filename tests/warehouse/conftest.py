"""Fixtures of the warehouse suite: a real log (SQLite store) and real warehouses of each dialect.

`target` is parametrised over DuckDB (a file) and PostgreSQL (a fresh database per test,
dropped afterwards: the loader creates schemas named after sources, which must not meet
another test's).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import psycopg
import pytest

from tests.conftest import PG_URL, missing_service
from trackyard.spec import Envelope, normalise, parse_ms
from trackyard.store import LogRecord, Source, Store
from trackyard.store.sqlite import SQLiteStore
from trackyard.warehouse.loader import Loader
from trackyard.warehouse.registry import SyncResult, WarehouseConfig

RECEIVED_AT = "2026-11-28T10:00:05.300Z"
_TYPE_NAMES = {
    "VARCHAR": "varchar",
    "character varying": "varchar",
    "BIGINT": "integer",
    "bigint": "integer",
    "DOUBLE": "float",
    "double precision": "float",
    "BOOLEAN": "boolean",
    "boolean": "boolean",
    "TIMESTAMP": "timestamp",
    "timestamp without time zone": "timestamp",
}


class Log:
    """The event log of a real store, and its sources."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sources: dict[str, Source] = {}

    def source(self, name: str) -> Source:
        if name not in self.sources:
            self.sources[name] = self.store.create_source(name, f"wk-{name}-{uuid.uuid4().hex[:8]}")
        return self.sources[name]

    def append(
        self, messages: list[dict[str, Any]], source: str = "default", received_at: str = RECEIVED_AT
    ) -> None:
        """Normalise messages as the collection API does and append them to the log."""
        received_ms = parse_ms(received_at)
        assert received_ms is not None
        envelope = Envelope(received_ms=received_ms, channel="server")
        records = []
        for message in messages:
            event = normalise(dict(message), envelope)
            records.append(
                LogRecord(
                    self.source(source).id,
                    event["messageId"],
                    received_ms,
                    event["type"],
                    orjson.dumps(event),
                )
            )
        self.store.append(records)

    def append_stored(self, events: list[dict[str, Any]], source: str = "default") -> None:
        """Append events that are already normalised (as the log holds them)."""
        self.store.append(
            [LogRecord(self.source(source).id, e["messageId"], 0, e["type"], orjson.dumps(e)) for e in events]
        )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    store = SQLiteStore(tmp_path / "trackyard.db")
    store.migrate()
    yield Log(store)
    store.close()


@dataclass
class Target:
    """A warehouse of one dialect, and a way to look inside it."""

    dialect: str
    settings: dict[str, Any]
    url: str = ""

    @property
    def config(self) -> WarehouseConfig:
        return WarehouseConfig("test", self.dialect, self.settings)

    def sync(self, log: Log, **options: Any) -> SyncResult:
        result = Loader(log.store, self.config, **options).sync()
        assert result.error is None, result.error
        return result

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.dialect == "duckdb":
            with duckdb.connect(self.settings["path"], read_only=True) as conn:
                return conn.execute(sql).fetchall()
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql).fetchall()

    def columns(self, schema: str, table: str) -> dict[str, str]:
        """Column name → type (varchar, integer, float, boolean, timestamp), in table order."""
        rows = self.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{schema}' AND table_name = '{table}' ORDER BY ordinal_position"
        )
        return {name: _TYPE_NAMES.get(type_, type_) for name, type_ in rows}

    def tables(self, schema: str) -> set[str]:
        rows = self.query(
            f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}' "
            "AND table_type = 'BASE TABLE'"
        )
        return {name for (name,) in rows}

    def count(self, schema: str, table: str) -> int:
        return int(self.query(f'SELECT count(*) FROM "{schema}"."{table}"')[0][0])


def fresh_database() -> tuple[str, str]:
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        missing_service(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    name = f"ty_wh_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, PG_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def warehouse_pg_url() -> Iterator[str]:
    """A PostgreSQL URL of a database of its own, dropped afterwards."""
    name, url = fresh_database()
    yield url
    drop_database(name)


@pytest.fixture(params=["duckdb", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "duckdb":
        return Target("duckdb", {"path": str(tmp_path / "warehouse.duckdb")})
    url = request.getfixturevalue("warehouse_pg_url")
    return Target("postgres", {"url": url}, url=url)


def track(event: str, properties: dict[str, Any], message_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "properties": properties,
        "messageId": message_id,
        "anonymousId": "anon-1",
        "timestamp": "2026-11-28T10:00:00.000Z",
        **fields,
    }


def utc(text: str) -> datetime:
    """A naive UTC datetime, as the warehouses return timestamps."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
