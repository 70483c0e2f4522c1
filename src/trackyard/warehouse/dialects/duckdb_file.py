"""DuckDB warehouse: one file, opened only while a batch loads.

DuckDB allows one process per file, and a file held open read-write cannot even be read
by another process (contract §4.9). The loader therefore attaches the file to the
batch's in-memory DuckDB for one load and detaches it at once: between loads anyone's
`duckdb` shell or dbt run can open it. Rows go from the batch to the file inside DuckDB
(INSERT … SELECT), never through Python, into row groups of `ROW_GROUP_ROWS`. The file
lock is the load lock: a second loader waits for it (up to `lock_timeout_s`) and then
reads the position the first one left. Listing the tables attaches the file the same
way, read-only, so it waits for a load as a second loader would and never opens a file
a load holds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from trackyard.warehouse.batch import SQL_TYPES, LogBatch
from trackyard.warehouse.dialects import STATE_SCHEMA, Dialect, Session, TableRef, TableRows
from trackyard.warehouse.errors import WarehouseBusy, WarehouseUnavailable
from trackyard.warehouse.naming import literal, quote
from trackyard.warehouse.types import ColumnType

ALIAS = "warehouse"
LOCK_RETRY_S = 0.2
# Rows per row group written by the loader (DuckDB's default is 122,880). A load appends a few
# thousand rows to each event table; rows that do not fill a row group go through the WAL and
# the checkpoint rewrites the table's last, partly filled row group at every commit. Small row
# groups bound that rewrite and let most rows be written once, compressed, during the INSERT.
ROW_GROUP_ROWS = 8192
LISTING_ENGINE = {"memory_limit": "64MB", "threads": 1}  # counting rows needs little (serve lists tables)

_FROM_SQL = {
    "BOOLEAN": ColumnType.BOOLEAN,
    "TINYINT": ColumnType.INTEGER,
    "SMALLINT": ColumnType.INTEGER,
    "INTEGER": ColumnType.INTEGER,
    "BIGINT": ColumnType.INTEGER,
    "FLOAT": ColumnType.FLOAT,
    "DOUBLE": ColumnType.FLOAT,
    "TIMESTAMP": ColumnType.TIMESTAMP,
}


class DuckDBDialect(Dialect):
    name = "duckdb"
    max_identifier_length = 255
    max_columns = 5000

    def __init__(self, path: str | Path, lock_timeout_s: float = 0.0) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    def describe(self) -> str:
        return str(self.path)

    def ping(self) -> None:
        if not self.path.parent.is_dir():
            raise WarehouseUnavailable(
                f"DuckDB warehouse {self.path}: directory {self.path.parent} does not exist; create it first"
            )

    @contextmanager
    def session(self, engine: duckdb.DuckDBPyConnection) -> Iterator[Session]:
        self.ping()
        self._attach(engine)
        try:
            yield DuckDBSession(engine)
        finally:
            engine.execute(f"DETACH {ALIAS}")

    def tables(self, schemas: Iterable[str]) -> list[TableRows]:
        names = ", ".join(literal(s) for s in schemas)
        if not names or not self.path.exists():  # nothing loaded yet
            return []
        engine = duckdb.connect(config=LISTING_ENGINE)
        try:
            self._attach(engine, read_only=True)
            listed = engine.execute(
                f"SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = '{ALIAS}' "
                f"AND schema_name IN ({names})"
            ).fetchall()
            return [
                TableRows(
                    ref[0],
                    ref[1],
                    int(engine.execute(f"SELECT count(*) FROM {_table(ref)}").fetchall()[0][0]),
                )
                for ref in listed
            ]
        finally:
            engine.close()

    def _attach(self, engine: duckdb.DuckDBPyConnection, read_only: bool = False) -> None:
        options = " (READ_ONLY)" if read_only else f" (ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                engine.execute(f"ATTACH {literal(str(self.path))} AS {ALIAS}{options}")
                return
            except (duckdb.IOException, duckdb.ResourceInUseException) as exc:
                if not _held_elsewhere(exc):
                    raise WarehouseUnavailable(
                        f"DuckDB warehouse {self.path} cannot be opened: {exc}"
                    ) from exc
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"DuckDB warehouse {self.path} is open in another process (a duckdb shell, dbt, or "
                        "another loader); it loads when that process closes it"
                    ) from exc
                time.sleep(LOCK_RETRY_S)


def _held_elsewhere(error: Exception) -> bool:
    """The file is open in another process (its lock) or attached by another loader of this one."""
    message = str(error).lower()
    return "lock" in message or "already attached" in message


def _table(ref: TableRef) -> str:
    return f"{ALIAS}.{quote(ref[0])}.{quote(ref[1])}"


_POSITION = f"{ALIAS}.{quote(STATE_SCHEMA)}.position"


class DuckDBSession(Session):
    def __init__(self, engine: duckdb.DuckDBPyConnection) -> None:
        self.engine = engine

    def _run(self, sql: str) -> list[tuple]:
        return self.engine.execute(sql).fetchall()

    # -- state --------------------------------------------------------------------------
    def _read_position(self) -> int:
        exists = self._run(
            f"SELECT 1 FROM duckdb_tables() WHERE database_name = '{ALIAS}' "
            f"AND schema_name = {literal(STATE_SCHEMA)} AND table_name = 'position'"
        )
        if not exists:
            return 0
        return int(self._run(f"SELECT coalesce(max(seq), 0) FROM {_POSITION}")[0][0])

    def _write_position(self, seq: int) -> None:
        self._run(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{quote(STATE_SCHEMA)}")
        self._run(
            f"CREATE TABLE IF NOT EXISTS {_POSITION} (seq BIGINT NOT NULL, loaded_at TIMESTAMP NOT NULL)"
        )
        self._run(f"DELETE FROM {_POSITION}")
        self._run(f"INSERT INTO {_POSITION} VALUES ({int(seq)}, now()::TIMESTAMP)")

    def existing_columns(self, schemas: Iterable[str]) -> dict[TableRef, dict[str, ColumnType]]:
        names = ", ".join(literal(s) for s in schemas) or "NULL"
        rows = self._run(
            "SELECT c.schema_name, c.table_name, c.column_name, c.data_type FROM duckdb_columns() c "
            "JOIN duckdb_tables() t USING (database_name, schema_name, table_name) "
            f"WHERE c.database_name = '{ALIAS}' AND c.schema_name IN ({names}) ORDER BY c.column_index"
        )
        tables: dict[TableRef, dict[str, ColumnType]] = {}
        for schema, table, column, data_type in rows:
            tables.setdefault((schema, table), {})[column] = _FROM_SQL.get(data_type, ColumnType.VARCHAR)
        return tables

    # -- transactions and DDL -------------------------------------------------------------
    def _begin(self) -> None:
        self._run("BEGIN TRANSACTION")

    def _commit(self) -> None:
        self._run("COMMIT")

    def _rollback(self) -> None:
        with contextlib.suppress(duckdb.TransactionException):  # DuckDB may have ended it already
            self._run("ROLLBACK")

    def _ensure_schema(self, schema: str) -> None:
        self._run(f"CREATE SCHEMA IF NOT EXISTS {ALIAS}.{quote(schema)}")

    def _create_table(self, ref: TableRef, columns: dict[str, ColumnType]) -> None:
        definitions = ", ".join(f"{quote(name)} {SQL_TYPES[type_]}" for name, type_ in columns.items())
        self._run(f"CREATE TABLE {_table(ref)} ({definitions})")

    def _add_column(self, ref: TableRef, name: str, type_: ColumnType) -> None:
        self._run(f"ALTER TABLE {_table(ref)} ADD COLUMN {quote(name)} {SQL_TYPES[type_]}")

    def _widen_column(self, ref: TableRef, name: str, old: ColumnType, new: ColumnType) -> bool:
        using = _converted(quote(name), old, new)
        self._run(
            f"ALTER TABLE {_table(ref)} ALTER COLUMN {quote(name)} SET DATA TYPE {SQL_TYPES[new]} USING ({using})"
        )
        return True

    def _copy_as_text(self, ref: TableRef, name: str, old: ColumnType, target: str) -> None:
        text = _converted(quote(name), old, ColumnType.VARCHAR)
        self._run(f"UPDATE {_table(ref)} SET {quote(target)} = {text}")

    # -- rows -----------------------------------------------------------------------------
    def _append(self, ref: TableRef, names: list[str], select: str, batch: LogBatch, new_table: bool) -> int:
        columns = ", ".join(quote(n) for n in names)
        sql = f"INSERT INTO {_table(ref)} ({columns}) SELECT {columns} FROM ({select}) AS b"
        if not new_table:
            sql += f" WHERE NOT EXISTS (SELECT 1 FROM {_table(ref)} AS w WHERE w.id = b.id)"
        return int(self._run(sql)[0][0])

    def _upsert(self, ref: TableRef, names: list[str], select: str, batch: LogBatch) -> int:
        columns = ", ".join(quote(n) for n in names)
        updates = ", ".join(f"{quote(n)} = coalesce(b.{quote(n)}, w.{quote(n)})" for n in names if n != "id")
        updated = self._run(
            f"UPDATE {_table(ref)} AS w SET {updates} FROM ({select}) AS b WHERE w.id = b.id"
        )[0][0]
        inserted = self._run(
            f"INSERT INTO {_table(ref)} ({columns}) SELECT {columns} FROM ({select}) AS b "
            f"WHERE NOT EXISTS (SELECT 1 FROM {_table(ref)} AS w WHERE w.id = b.id)"
        )[0][0]
        return int(updated) + int(inserted)


def _converted(column: str, old: ColumnType, new: ColumnType) -> str:
    """SQL turning a column of type `old` into `new` without losing a value."""
    if new is ColumnType.VARCHAR:
        if old is ColumnType.BOOLEAN:
            return f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END"
        if old is ColumnType.TIMESTAMP:
            return f"strftime({column}, '%Y-%m-%dT%H:%M:%S.%fZ')"
        return f"CAST({column} AS VARCHAR)"
    if old is ColumnType.BOOLEAN:
        return f"CASE WHEN {column} THEN 1 WHEN NOT {column} THEN 0 END"
    return f"CAST({column} AS {SQL_TYPES[new]})"
