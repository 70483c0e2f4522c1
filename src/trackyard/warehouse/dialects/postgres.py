"""PostgreSQL warehouse: rows arrive by COPY, the load lock is an advisory lock.

A session takes a session-level advisory lock before it reads the position, so a second
loader (another trackyard process) waits until the first closes its connection and then
reads the position the first one committed. Each load is one transaction. Rows of a table go from the batch's DuckDB to PostgreSQL as Arrow → CSV →
`COPY … FROM STDIN`, straight into the table, whose `id` is its primary key. A batch
holding an id the table already has (a duplicate more than the ingest dedupe window
apart) fails that COPY; its savepoint is rolled back and the rows go through a temporary
table and `INSERT … ON CONFLICT (id) DO NOTHING` instead.

Widening a column that a view uses (dbt's `segment` package makes one over `pages`)
fails with "cannot alter type of a column used by a view or rule" (contract §4.9). The
attempt runs in a savepoint; on that error the column keeps its type and the plan adds
a `<column>__varchar` companion (plan.TablePlan.use_companion): the load goes on.

Listing the tables counts each one's rows with `count(*)` (the tables come from
information_schema). `pg_class.reltuples` would be free but is an estimate: -1 until a
table's first ANALYZE and stale until autovacuum runs again, so a table just loaded
would show no rows or old counts. The exact count costs a scan of each table.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import duckdb
import psycopg
import pyarrow.csv as pa_csv
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from trackyard.warehouse.batch import LogBatch
from trackyard.warehouse.dialects import STATE_SCHEMA, Dialect, Session, TableRef, TableRows
from trackyard.warehouse.errors import WarehouseUnavailable
from trackyard.warehouse.types import ColumnType

CONNECT_TIMEOUT_S = 5
# Key of the advisory lock that serialises loads into one database ("tywh").
LOAD_LOCK = 0x74797768
CSV_OPTIONS = pa_csv.WriteOptions(include_header=False)

SQL_TYPES = {
    ColumnType.BOOLEAN: "boolean",
    ColumnType.INTEGER: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.TIMESTAMP: "timestamp",
    ColumnType.VARCHAR: "varchar",
}
_FROM_SQL = {
    "boolean": ColumnType.BOOLEAN,
    "smallint": ColumnType.INTEGER,
    "integer": ColumnType.INTEGER,
    "bigint": ColumnType.INTEGER,
    "real": ColumnType.FLOAT,
    "double precision": ColumnType.FLOAT,
    "timestamp without time zone": ColumnType.TIMESTAMP,
}
_EXISTING = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND n.nspname = ANY(%s)
ORDER BY a.attnum
"""
_TABLES = """
SELECT table_schema, table_name FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema = ANY(%s)
"""


def redacted(url: str) -> str:
    """The URL without its password."""
    params = conninfo_to_dict(url)
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host", "localhost")
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname', '')}"


class PostgresDialect(Dialect):
    name = "postgres"
    max_identifier_length = 63
    max_columns = 1500  # PostgreSQL's hard limit is 1600, and dropped columns count against it

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        params.setdefault("application_name", f"trackyard-warehouse-{os.getpid()}")
        self.conninfo = make_conninfo(**params)
        self.where = redacted(url)

    def describe(self) -> str:
        return self.where

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.conninfo)
        except psycopg.OperationalError as exc:
            raise WarehouseUnavailable(f"PostgreSQL warehouse {self.where} cannot be reached: {exc}") from exc

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute("SELECT 1")

    def tables(self, schemas: Iterable[str]) -> list[TableRows]:
        try:
            with self._connect() as conn:
                listed = conn.execute(_TABLES, (list(schemas),)).fetchall()
                return [TableRows(ref[0], ref[1], _count(conn, ref)) for ref in listed]
        except psycopg.OperationalError as exc:
            raise WarehouseUnavailable(f"PostgreSQL warehouse {self.where} failed: {exc}") from exc

    @contextmanager
    def session(self, engine: duckdb.DuckDBPyConnection) -> Iterator[Session]:
        conn = self._connect()
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (LOAD_LOCK,))
            conn.commit()
            yield PostgresSession(conn)
        except psycopg.OperationalError as exc:
            raise WarehouseUnavailable(f"PostgreSQL warehouse {self.where} failed: {exc}") from exc
        finally:
            conn.close()


def _table(ref: TableRef) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(ref[0]), sql.Identifier(ref[1]))


def _count(conn: psycopg.Connection, ref: TableRef) -> int:
    return int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(ref))).fetchall()[0][0])


def _columns(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


_POSITION = sql.SQL("{}.position").format(sql.Identifier(STATE_SCHEMA))


class PostgresSession(Session):
    """One connection holding the load lock; each load is one transaction."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def _run(self, query: sql.Composable | str, params: tuple = ()) -> psycopg.Cursor:
        return self.conn.execute(query, params)  # type: ignore[arg-type]

    # -- state --------------------------------------------------------------------------
    def _read_position(self) -> int:
        row = self._run("SELECT to_regclass(%s)", (f'"{STATE_SCHEMA}".position',)).fetchone()
        if row is None or row[0] is None:
            return 0
        (seq,) = self._run(sql.SQL("SELECT coalesce(max(seq), 0) FROM {}").format(_POSITION)).fetchone() or (
            0,
        )
        return int(seq)

    def _write_position(self, seq: int) -> None:
        self._run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STATE_SCHEMA)))
        self._run(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (seq bigint NOT NULL, loaded_at timestamp NOT NULL)"
            ).format(_POSITION)
        )
        self._run(sql.SQL("DELETE FROM {}").format(_POSITION))
        self._run(sql.SQL("INSERT INTO {} VALUES (%s, now() AT TIME ZONE 'UTC')").format(_POSITION), (seq,))

    def existing_columns(self, schemas: Iterable[str]) -> dict[TableRef, dict[str, ColumnType]]:
        tables: dict[TableRef, dict[str, ColumnType]] = {}
        for schema, table, column, data_type in self._run(_EXISTING, (list(schemas),)).fetchall():
            tables.setdefault((schema, table), {})[column] = _FROM_SQL.get(data_type, ColumnType.VARCHAR)
        return tables

    # -- transactions and DDL -------------------------------------------------------------
    def _begin(self) -> None:
        """psycopg opens the transaction with the first statement."""

    def _commit(self) -> None:
        self.conn.commit()

    def _rollback(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()

    def _ensure_schema(self, schema: str) -> None:
        self._run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))

    def _create_table(self, ref: TableRef, columns: dict[str, ColumnType]) -> None:
        definitions = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(name),
                sql.SQL(SQL_TYPES[type_]),
                sql.SQL(" PRIMARY KEY" if name == "id" else ""),
            )
            for name, type_ in columns.items()
        )
        self._run(sql.SQL("CREATE TABLE {} ({})").format(_table(ref), definitions))

    def _add_column(self, ref: TableRef, name: str, type_: ColumnType) -> None:
        self._run(
            sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                _table(ref), sql.Identifier(name), sql.SQL(SQL_TYPES[type_])
            )
        )

    def _widen_column(self, ref: TableRef, name: str, old: ColumnType, new: ColumnType) -> bool:
        using = _converted(sql.Identifier(name), old, new)
        try:
            with self.conn.transaction():
                self._run(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING ({})").format(
                        _table(ref), sql.Identifier(name), sql.SQL(SQL_TYPES[new]), using
                    )
                )
        except psycopg.errors.FeatureNotSupported:  # a view or rule uses the column
            return False
        return True

    def _copy_as_text(self, ref: TableRef, name: str, old: ColumnType, target: str) -> None:
        text = _converted(sql.Identifier(name), old, ColumnType.VARCHAR)
        self._run(sql.SQL("UPDATE {} SET {} = {}").format(_table(ref), sql.Identifier(target), text))

    # -- rows -----------------------------------------------------------------------------
    def _append(self, ref: TableRef, names: list[str], select: str, batch: LogBatch, new_table: bool) -> int:
        csv = _csv_chunks(batch, select)
        try:
            with self.conn.transaction():
                return self._copy(_table(ref), names, csv)
        except psycopg.errors.UniqueViolation:
            pass  # an id the table already has: take the slow path below
        self._stage(ref, names, batch, select)
        inserted = self._run(
            sql.SQL(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM _trackyard_stage ON CONFLICT (id) DO NOTHING"
            ).format(_table(ref), cols=_columns(names))
        ).rowcount
        self._run("DROP TABLE _trackyard_stage")
        return inserted

    def _upsert(self, ref: TableRef, names: list[str], select: str, batch: LogBatch) -> int:
        self._stage(ref, names, batch, select)
        updates = sql.SQL(", ").join(
            sql.SQL("{col} = coalesce(b.{col}, w.{col})").format(col=sql.Identifier(n))
            for n in names
            if n != "id"
        )
        updated = self._run(
            sql.SQL("UPDATE {} AS w SET {} FROM _trackyard_stage AS b WHERE w.id = b.id").format(
                _table(ref), updates
            )
        ).rowcount
        inserted = self._run(
            sql.SQL(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM _trackyard_stage ON CONFLICT (id) DO NOTHING"
            ).format(_table(ref), cols=_columns(names))
        ).rowcount
        self._run("DROP TABLE _trackyard_stage")
        return updated + inserted

    def _stage(self, ref: TableRef, names: list[str], batch: LogBatch, select: str) -> None:
        """The rows in a temporary table shaped like the target's columns."""
        self._run(
            sql.SQL("CREATE TEMP TABLE _trackyard_stage ON COMMIT DROP AS SELECT {} FROM {} LIMIT 0").format(
                _columns(names), _table(ref)
            )
        )
        self._copy(sql.Identifier("_trackyard_stage"), names, _csv_chunks(batch, select))

    def _copy(self, table: sql.Composable, names: list[str], chunks: Iterator[bytes]) -> int:
        rows = 0
        with self.conn.cursor() as cursor:
            query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(table, _columns(names))
            with cursor.copy(query) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            rows = cursor.rowcount
        return rows


def _csv_chunks(batch: LogBatch, select: str) -> Iterator[bytes]:
    """The rows as CSV, one chunk per Arrow record batch: strings quoted, NULL empty and unquoted.
    PostgreSQL cannot store the NUL character in text; it is removed."""
    for record_batch in batch.arrow(select):
        sink = io.BytesIO()
        pa_csv.write_csv(record_batch, sink, CSV_OPTIONS)
        yield sink.getvalue().replace(b"\x00", b"")


def _converted(column: sql.Identifier, old: ColumnType, new: ColumnType) -> sql.Composed:
    """SQL turning a column of type `old` into `new` without losing a value."""
    if new is ColumnType.VARCHAR:
        if old is ColumnType.BOOLEAN:
            return sql.SQL("CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END").format(c=column)
        if old is ColumnType.TIMESTAMP:
            return sql.SQL("""to_char({c}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""").format(c=column)
        return sql.SQL("{c}::text").format(c=column)
    if old is ColumnType.BOOLEAN:
        return sql.SQL("CASE WHEN {c} THEN 1 WHEN NOT {c} THEN 0 END").format(c=column)
    return sql.SQL("{c}::{t}").format(c=column, t=sql.SQL(SQL_TYPES[new]))
