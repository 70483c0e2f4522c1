"""The embedded store: one SQLite file in WAL mode, one writer process.

Appends come from a single writer thread (the ingest group committer), so the dedupe
window lives in memory (see dedupe.py). `serve` holds an exclusive lock file so that a
second server cannot share the database by accident; the CLI may read and configure
while a server runs.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from trackyard.store.base import (
    DEFAULT_DEDUPE_WINDOW_S,
    DEFAULT_SEGMENT_ROWS,
    AppendResult,
    FailureRecord,
    LogColumns,
    LogRecord,
    Segment,
    Source,
    SourceExists,
    Store,
    StoredEvent,
    StoredFailure,
    StoreError,
    StoreUnavailable,
    check_source_name,
    segment_table,
    source_slug,
)
from trackyard.store.dedupe import RecentIds, id_hash, id_hashes

MIGRATIONS: list[str] = [
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sources (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        slug TEXT NOT NULL UNIQUE,
        write_key TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE log_segments (
        id INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        min_received_ms INTEGER,
        max_received_ms INTEGER,
        rows INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        sealed INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE ingest_failures (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX ingest_failures_received ON ingest_failures (received_ms);
    CREATE TABLE consumer_positions (
        consumer TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE destinations (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source_id INTEGER NOT NULL,
        type TEXT NOT NULL,
        settings TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        filters TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE delivery_attempts (
        id INTEGER PRIMARY KEY,
        destination_id INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        status INTEGER NOT NULL,
        verdict TEXT NOT NULL,
        latency_ms REAL NOT NULL,
        events INTEGER NOT NULL,
        message_ids TEXT NOT NULL,
        reason TEXT NOT NULL,
        request TEXT NOT NULL,
        response TEXT NOT NULL
    );
    CREATE INDEX delivery_attempts_destination ON delivery_attempts (destination_id, id);
    CREATE TABLE delivery_minutes (
        destination_id INTEGER NOT NULL,
        minute INTEGER NOT NULL,
        delivered INTEGER NOT NULL,
        retried INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        filtered INTEGER NOT NULL,
        PRIMARY KEY (destination_id, minute)
    );
    CREATE TABLE delivery_workers (
        destination_id INTEGER PRIMARY KEY,
        retrying INTEGER NOT NULL,
        in_flight INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY,
        destination_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        body TEXT NOT NULL,
        reason TEXT NOT NULL,
        status INTEGER NOT NULL,
        request TEXT NOT NULL,
        response TEXT NOT NULL,
        failed_ms INTEGER NOT NULL,
        state TEXT NOT NULL
    );
    CREATE INDEX dead_letters_destination ON dead_letters (destination_id, state, id);
    """,
    """
    CREATE TABLE archive_files (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL,
        hour_ms INTEGER NOT NULL,
        part INTEGER NOT NULL,
        file_key TEXT NOT NULL UNIQUE,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        min_received_ms INTEGER NOT NULL,
        max_received_ms INTEGER NOT NULL,
        n_events INTEGER NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE INDEX archive_files_source ON archive_files (source_id, last_seq);
    CREATE INDEX archive_files_hour ON archive_files (source_id, hour_ms);
    CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms INTEGER NOT NULL);
    CREATE TABLE replay_jobs (
        id INTEGER PRIMARY KEY,
        destination_id INTEGER NOT NULL,
        source_id INTEGER NOT NULL,
        since_ms INTEGER,
        until_ms INTEGER,
        events TEXT NOT NULL,
        types TEXT NOT NULL,
        rate REAL NOT NULL,
        log_from INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        cursor INTEGER NOT NULL,
        state TEXT NOT NULL,
        n_read INTEGER NOT NULL,
        n_sent INTEGER NOT NULL,
        n_delivered INTEGER NOT NULL,
        n_failed INTEGER NOT NULL,
        n_filtered INTEGER NOT NULL,
        total INTEGER NOT NULL,
        error TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        lease_owner TEXT NOT NULL,
        lease_expires_ms INTEGER NOT NULL,
        finished_ms INTEGER
    );
    CREATE INDEX replay_jobs_state ON replay_jobs (state, lease_expires_ms);
    """,
    """
    CREATE TABLE warehouses (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        dialect TEXT NOT NULL,
        settings TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE warehouse_status (
        name TEXT PRIMARY KEY,
        last_sync_ms INTEGER,
        events_loaded INTEGER NOT NULL DEFAULT 0,
        rows_loaded INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_ms INTEGER,
        warnings TEXT NOT NULL DEFAULT '[]'
    );
    """,
    """
    ALTER TABLE leases ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE processes (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        heartbeat_ms INTEGER NOT NULL
    );
    """,
]

_SEGMENT_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    seq INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL
)
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "FULL",
        segment_rows: int = DEFAULT_SEGMENT_ROWS,
        dedupe_window_s: int = DEFAULT_DEDUPE_WINDOW_S,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.segment_rows = segment_rows
        self.busy_timeout_ms = busy_timeout_ms
        self.dedupe_window_s = dedupe_window_s
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._recent = RecentIds(dedupe_window_s * 1000)
        self._recent_loaded = False

    # -- connections -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        # Only a new database takes it: events are ~0.8 KB, and 16 KB pages mean a quarter of the
        # WAL frames (one pwrite and checksum each) of the default 4 KB, ~15 % less CPU per append.
        conn.execute("PRAGMA page_size = 16384")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        # 4 MB per connection (one per thread that touches the store): appends touch the tail
        # only, and readers follow it through the OS page cache; 16 MB each cost RSS, not CPU.
        conn.execute("PRAGMA cache_size = -4096")
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken at once (BEGIN IMMEDIATE), rolled back on error."""
        with self._write_lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite store {self.path} cannot start a write: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._write()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def migrate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            current = row[0] or 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    for statement in filter(str.strip, script.split(";")):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            if conn.execute("SELECT count(*) FROM log_segments").fetchone()[0] == 0:
                self._open_segment(conn, first_seq=1)

    # -- configuration ---------------------------------------------------------------
    def create_source(self, name: str, write_key: str) -> Source:
        check_source_name(name)
        created = _now_ms()
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT INTO sources (name, slug, write_key, created_ms) VALUES (?, ?, ?, ?)",
                    (name, source_slug(name), write_key, created),
                )
        except sqlite3.IntegrityError as exc:
            raise SourceExists(
                f"a source with this name, slug or write key already exists: {name!r}"
            ) from exc
        return Source(int(cursor.lastrowid or 0), name, source_slug(name), write_key, created)

    def list_sources(self) -> list[Source]:
        rows = self._conn.execute(
            "SELECT id, name, slug, write_key, created_ms, enabled FROM sources ORDER BY id"
        ).fetchall()
        return [Source(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def get_setting(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- the log ---------------------------------------------------------------------
    def append(self, records: Sequence[LogRecord], failures: Sequence[FailureRecord] = ()) -> AppendResult:
        with self._write_lock:
            return self._append_locked(records, failures)

    def _append_locked(self, records: Sequence[LogRecord], failures: Sequence[FailureRecord]) -> AppendResult:
        self._load_recent_ids()
        keys = id_hashes(records)
        fresh = records
        if not self._recent.is_new(keys):
            keys, fresh = self._drop_duplicates(keys, records)
        try:
            with self._write() as conn:
                if fresh:
                    self._append_rows(conn, fresh)
                if failures:
                    conn.executemany(
                        "INSERT INTO ingest_failures (source_id, received_ms, code, reason, body) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(f.source_id, f.received_ms, f.code, f.reason, f.body) for f in failures],
                    )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self.path} could not commit: {exc}") from exc
        if fresh:
            self._recent.add_many(keys, [record.received_ms for record in fresh])
        return AppendResult(len(fresh), len(records) - len(fresh), len(failures))

    def _drop_duplicates(
        self, keys: list[int], records: Sequence[LogRecord]
    ) -> tuple[list[int], list[LogRecord]]:
        """The records (and their keys) neither in the window nor earlier in this group."""
        fresh_keys: list[int] = []
        fresh: list[LogRecord] = []
        group: set[int] = set()
        for key, record, known in zip(keys, records, self._recent.known(keys), strict=True):
            if known or key in group:
                continue
            group.add(key)
            fresh_keys.append(key)
            fresh.append(record)
        return fresh_keys, fresh

    def _append_rows(self, conn: sqlite3.Connection, records: Sequence[LogRecord]) -> None:
        """Append in the newest segment (sealing it when full)."""
        segment_id, last_seq, rows = conn.execute(
            "SELECT id, last_seq, rows FROM log_segments ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if rows >= self.segment_rows:
            conn.execute("UPDATE log_segments SET sealed = 1 WHERE id = ?", (segment_id,))
            segment_id = self._open_segment(conn, first_seq=last_seq + 1)
            rows = 0
        seq = last_seq + len(records)
        table = segment_table(segment_id)
        params = [
            (number, record.source_id, record.received_ms, record.message_id, record.type, record.body)
            for number, record in enumerate(records, start=last_seq + 1)
        ]
        conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)", params)
        received = [record.received_ms for record in records]
        conn.execute(
            "UPDATE log_segments SET last_seq = ?, rows = rows + ?, "
            "min_received_ms = min(coalesce(min_received_ms, ?), ?), "
            "max_received_ms = max(coalesce(max_received_ms, ?), ?) WHERE id = ?",
            (seq, len(records), min(received), min(received), max(received), max(received), segment_id),
        )

    def _open_segment(self, conn: sqlite3.Connection, first_seq: int) -> int:
        cursor = conn.execute(
            "INSERT INTO log_segments (first_seq, last_seq, created_ms) VALUES (?, ?, ?)",
            (first_seq, first_seq - 1, _now_ms()),
        )
        segment_id = int(cursor.lastrowid or 0)
        conn.execute(_SEGMENT_DDL.format(table=segment_table(segment_id)))
        return segment_id

    def _load_recent_ids(self) -> None:
        """Rebuild the dedupe window from the log's tail (once, before the first append)."""
        if self._recent_loaded:
            return
        horizon = _now_ms() - self._recent.window_ms
        for segment in self.segments():
            if segment.max_received_ms is None or segment.max_received_ms < horizon:
                continue
            rows = self._conn.execute(
                f"SELECT source_id, message_id, received_ms FROM {segment.table} "
                "WHERE received_ms >= ? ORDER BY seq",
                (horizon,),
            )
            while chunk := rows.fetchmany(10_000):
                keys = [id_hash(source_id, message_id) for source_id, message_id, _ in chunk]
                self._recent.add_many(keys, [received_ms for _, _, received_ms in chunk])
        self._recent_loaded = True

    def prune_dedupe(self, now_ms: int) -> int:
        with self._write_lock:
            return self._recent.expire(now_ms)

    def drop_segment(self, segment_id: int) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT sealed FROM log_segments WHERE id = ?", (segment_id,)).fetchone()
            if row is None or not row[0]:
                raise StoreError(
                    f"log segment {segment_id} is not a sealed segment; only sealed ones are dropped"
                )
            conn.execute(f"DROP TABLE {segment_table(segment_id)}")
            conn.execute("DELETE FROM log_segments WHERE id = ?", (segment_id,))

    def segments(self) -> list[Segment]:
        rows = self._conn.execute(
            "SELECT id, first_seq, last_seq, min_received_ms, max_received_ms, rows, sealed "
            "FROM log_segments ORDER BY id"
        ).fetchall()
        return [Segment(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]

    def head(self) -> int:
        row = self._conn.execute("SELECT last_seq FROM log_segments ORDER BY id DESC LIMIT 1").fetchone()
        return int(row[0]) if row else 0

    def read_log(
        self, after: int = 0, limit: int = 1000, source_id: int | None = None, since_ms: int | None = None
    ) -> list[StoredEvent]:
        result: list[StoredEvent] = []
        for segment in self.segments():
            if segment.last_seq <= after or len(result) >= limit:
                continue
            if since_ms is not None and (segment.max_received_ms or 0) < since_ms:
                continue
            sql = f"SELECT seq, source_id, received_ms, body FROM {segment.table} WHERE seq > ?"
            params: list[int] = [after]
            if source_id is not None:
                sql += " AND source_id = ?"
                params.append(source_id)
            if since_ms is not None:
                sql += " AND received_ms >= ?"
                params.append(since_ms)
            sql += " ORDER BY seq LIMIT ?"
            params.append(limit - len(result))
            rows = self._conn.execute(sql, params).fetchall()
            result.extend(StoredEvent(r[0], r[1], r[2], bytes(r[3])) for r in rows)
        return result

    def read_log_columns(self, after: int = 0, limit: int = 1000) -> LogColumns:
        """The rows as SQLite gives them, split by `zip`: sqlite3 lets go of the GIL at every
        row, so a thread reading here barely slows a DuckDB query beside it."""
        rows: list[tuple[int, int, bytes]] = []
        for segment in self.segments():
            if segment.last_seq <= after or len(rows) >= limit:
                continue
            rows += self._conn.execute(
                f"SELECT seq, source_id, body FROM {segment.table} WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit - len(rows)),
            ).fetchall()
        if not rows:
            return LogColumns((), (), ())
        seqs, source_ids, bodies = zip(*rows, strict=True)
        return LogColumns(seqs, source_ids, bodies)

    def read_failures(
        self, source_id: int | None = None, since_ms: int | None = None, limit: int = 1000
    ) -> list[StoredFailure]:
        sql = "SELECT id, source_id, received_ms, code, reason, body FROM ingest_failures WHERE 1 = 1"
        params: list[int] = []
        if source_id is not None:
            sql += " AND source_id = ?"
            params.append(source_id)
        if since_ms is not None:
            sql += " AND received_ms >= ?"
            params.append(since_ms)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        rows = self._conn.execute(sql, params).fetchall()
        return [StoredFailure(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    # -- consumers -------------------------------------------------------------------
    def get_position(self, consumer: str) -> int | None:
        row = self._conn.execute(
            "SELECT position FROM consumer_positions WHERE consumer = ?", (consumer,)
        ).fetchone()
        return int(row[0]) if row else None

    def set_position(self, consumer: str, position: int) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO consumer_positions (consumer, position, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, "
                "updated_ms = excluded.updated_ms",
                (consumer, position, _now_ms()),
            )
