"""Warehouse dialects: one module per database behind one small interface.

A dialect (`Dialect`) knows its limits (`max_identifier_length`, `max_columns`), can
`ping` its database, `describe` where it is (without secrets) and list the `tables` of
some schemas with their row counts, and opens a `Session`: one connection that holds the warehouse's
load lock until it closes, so two loaders never load the same events. A session offers

- `position()`: the last log seq loaded, kept in the warehouse itself (`_trackyard.position`)
  and written in the same transaction as the rows, so rows and position commit together;
- `existing_columns(schemas)`: the tables and column types already there;
- `load(plans, batch, expected)`: in one transaction, check the position is still
  `expected`, apply each `TablePlan` (schema, table, new columns, widened types), insert
  the rows, and move the position to `batch.last_seq`.

`Session.load` is written once, here, over primitives each dialect implements:
`_begin/_commit/_rollback`, `_ensure_schema`, `_create_table`, `_add_column`,
`_widen_column` (False when the database refuses), `_copy_as_text` (fill a companion
column), `_append` (insert rows whose id is new) and `_upsert` (latest non-null value per
column). The rows of a table come from the batch's in-memory DuckDB as a SELECT
(`LogBatch.select`): a DuckDB warehouse runs it directly, any other reads it as Arrow
(`LogBatch.arrow`) and bulk-loads it (PostgreSQL: COPY). A new dialect (Snowflake,
BigQuery, Redshift, ClickHouse) is one module here plus its entry in `dialect_for` and `DIALECTS`.
"""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from trackyard.warehouse.errors import PositionMoved, WarehouseError
from trackyard.warehouse.tables import Load
from trackyard.warehouse.types import ColumnType

if TYPE_CHECKING:  # kept out of imports at run time: listing warehouses needs no DuckDB
    import duckdb

    from trackyard.warehouse.batch import LogBatch
    from trackyard.warehouse.plan import TablePlan

TableRef = tuple[str, str]
STATE_SCHEMA = "_trackyard"


@dataclass(frozen=True, order=True)
class TableRows:
    """A table of the warehouse and how many rows it holds."""

    schema: str
    table: str
    rows: int


@dataclass
class LoadResult:
    rows: int = 0
    tables: int = 0
    warnings: list[str] = field(default_factory=list)


class Session(ABC):
    """A locked connection to one warehouse (see the module docstring)."""

    crash_at: str | None = None  # a crash test's kill point (loader.CRASH_ENV); None otherwise

    def position(self) -> int:
        return self._read_position()

    @abstractmethod
    def existing_columns(self, schemas: Iterable[str]) -> dict[TableRef, dict[str, ColumnType]]: ...

    def load(self, plans: Sequence[TablePlan], batch: LogBatch, expected: int) -> LoadResult:
        result = LoadResult(tables=len(plans))
        self._begin()
        try:
            if self._read_position() != expected:
                raise PositionMoved(f"the warehouse moved past position {expected} while this batch was read")
            by_table = {plan.spec.ref: plan for plan in plans}
            for table in batch.load_order(plan.spec for plan in plans):
                plan = by_table[table.ref]
                result.rows += self._load_table(plan, batch)
                result.warnings.extend(plan.warnings)
            self._write_position(batch.last_seq)
            self._inject_crash("before_commit")
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return result

    def _load_table(self, plan: TablePlan, batch: LogBatch) -> int:
        ref = (plan.spec.schema, plan.spec.name)
        self._ensure_schema(ref[0])
        if plan.create is not None:
            self._create_table(ref, plan.create)
        for name, type_ in plan.add.items():
            self._add_column(ref, name, type_)
        for name, (old, new) in list(plan.widen.items()):
            if not self._widen_column(ref, name, old, new):
                companion = plan.use_companion(name)
                self._add_column(ref, companion, ColumnType.VARCHAR)
                self._copy_as_text(ref, name, old, companion)
        self._inject_crash("after_ddl")
        select = batch.select(plan.spec, plan.outputs)
        names = [output.name for output in plan.outputs]
        if plan.spec.load is Load.UPSERT:
            rows = self._upsert(ref, names, select, batch)
        else:
            rows = self._append(ref, names, select, batch, new_table=plan.create is not None)
        self._inject_crash("after_rows")
        return rows

    def _inject_crash(self, point: str) -> None:
        """Die here, as a power cut would, when a crash test asked for this point."""
        if self.crash_at == point:
            os.kill(os.getpid(), signal.SIGKILL)

    # -- primitives --------------------------------------------------------------------------
    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _read_position(self) -> int: ...

    @abstractmethod
    def _write_position(self, seq: int) -> None: ...

    @abstractmethod
    def _ensure_schema(self, schema: str) -> None: ...

    @abstractmethod
    def _create_table(self, ref: TableRef, columns: dict[str, ColumnType]) -> None: ...

    @abstractmethod
    def _add_column(self, ref: TableRef, name: str, type_: ColumnType) -> None: ...

    @abstractmethod
    def _widen_column(self, ref: TableRef, name: str, old: ColumnType, new: ColumnType) -> bool: ...

    @abstractmethod
    def _copy_as_text(self, ref: TableRef, name: str, old: ColumnType, target: str) -> None: ...

    @abstractmethod
    def _append(
        self, ref: TableRef, names: list[str], select: str, batch: LogBatch, new_table: bool
    ) -> int: ...

    @abstractmethod
    def _upsert(self, ref: TableRef, names: list[str], select: str, batch: LogBatch) -> int: ...


class Dialect(ABC):
    name: ClassVar[str]
    max_identifier_length: ClassVar[int]
    max_columns: ClassVar[int]

    @abstractmethod
    def session(self, engine: duckdb.DuckDBPyConnection) -> AbstractContextManager[Session]:
        """Connect and take the load lock; `engine` is the in-memory DuckDB of the batch."""

    @abstractmethod
    def ping(self) -> None:
        """Raise WarehouseUnavailable unless the warehouse can be reached and written."""

    @abstractmethod
    def describe(self) -> str:
        """Where the warehouse is, without secrets."""

    @abstractmethod
    def tables(self, schemas: Iterable[str]) -> list[TableRows]:
        """The tables of these schemas with their exact row counts."""


def dialect_for(kind: str, settings: dict[str, Any], lock_timeout_s: float = 0.0) -> Dialect:
    """The dialect of a configured warehouse (`kind` as stored: duckdb, postgres)."""
    if kind == "duckdb":
        from trackyard.warehouse.dialects.duckdb_file import DuckDBDialect

        return DuckDBDialect(settings["path"], lock_timeout_s=lock_timeout_s)
    if kind == "postgres":
        from trackyard.warehouse.dialects.postgres import PostgresDialect

        return PostgresDialect(settings["url"])
    raise WarehouseError(f"unknown warehouse dialect {kind!r}: use one of {', '.join(DIALECTS)}")


DIALECTS = ("duckdb", "postgres")
