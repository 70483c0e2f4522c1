"""Counting what the server actually stored: the figure must be durable, deduplicated events.

Both engines keep the log in segment tables listed in `log_segments`; every segment table
is counted directly (SQLite: the database file opened read-only), rows and distinct
(source, messageId) pairs.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from trackyard.store.base import segment_table

SETTLE_POLL_S = 0.2
SETTLE_TIMEOUT_S = 10.0


class Counter(Protocol):
    def rows(self) -> int: ...

    def distinct_ids(self) -> int: ...


class SQLiteCounter:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _query_segments(self, sql: str) -> int:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            tables = [segment_table(row[0]) for row in conn.execute("SELECT id FROM log_segments")]
            return sum(conn.execute(sql.format(table=table)).fetchone()[0] for table in tables)
        finally:
            conn.close()

    def rows(self) -> int:
        return self._query_segments("SELECT count(*) FROM {table}")

    def distinct_ids(self) -> int:
        return self._query_segments("SELECT count(DISTINCT source_id || ':' || message_id) FROM {table}")


class PostgresCounter:
    """The same count on PostgreSQL, through the server's own URL (its schema in search_path)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _query_segments(self, sql: str) -> int:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            ids = [row[0] for row in conn.execute("SELECT id FROM log_segments")]
            counts = [conn.execute(sql.format(table=segment_table(i))).fetchone() for i in ids]
        return sum(int(row[0]) for row in counts if row is not None)

    def rows(self) -> int:
        return self._query_segments("SELECT count(*) FROM {table}")

    def distinct_ids(self) -> int:
        return self._query_segments("SELECT count(DISTINCT (source_id, message_id)) FROM {table}")


def settled(count: Callable[[], int]) -> int:
    """Count until two reads agree: in-flight requests commit just after the load generator stops."""
    previous = count()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_S)
        current = count()
        if current == previous:
            return current
        previous = current
    return previous
