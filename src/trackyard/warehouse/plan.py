"""What loading a batch into one table changes: new tables and columns, widened types.

A column's type for this batch comes from what its paths held: strings are timestamps
if every one is an ISO-8601 date-time, integers must fit 64 bits, and mixed kinds join
along the lattice (types.py). Joined with the column's type in the warehouse, that
gives the type after the load: a new column is added with it, a narrower existing
column is widened to it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from trackyard.warehouse.batch import LogBatch, Output, fits_bigint, looks_like_timestamp
from trackyard.warehouse.shape import Kind
from trackyard.warehouse.tables import COMPANION_SUFFIX, ColumnSpec, TableSpec
from trackyard.warehouse.types import ColumnType, join, join_all

_KIND_TYPES = {
    Kind.STRING: ColumnType.TIMESTAMP,  # until a value is not an ISO-8601 date-time
    Kind.INTEGER: ColumnType.INTEGER,
    Kind.UINTEGER: ColumnType.INTEGER,  # until a value is over 2^63 - 1
    Kind.FLOAT: ColumnType.FLOAT,
    Kind.BOOLEAN: ColumnType.BOOLEAN,
    Kind.ARRAY: ColumnType.VARCHAR,
}


@dataclass(frozen=True)
class Limits:
    """What a dialect allows: identifier length (bytes) and columns per table."""

    max_length: int
    max_columns: int


@dataclass
class TablePlan:
    spec: TableSpec
    create: dict[str, ColumnType] | None  # the columns of a table that does not exist yet
    add: dict[str, ColumnType] = field(default_factory=dict)
    widen: dict[str, tuple[ColumnType, ColumnType]] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_length: int = 63

    @property
    def label(self) -> str:
        return f"{self.spec.schema}.{self.spec.name}"

    def use_companion(self, name: str) -> str:
        """The dialect cannot widen `name` (e.g. a PostgreSQL view uses it): the column keeps
        its type and the values that fit it; `<name>__varchar` gets every value as text."""
        old, new = self.widen.pop(name)
        companion = name[: self.max_length - len(COMPANION_SUFFIX)] + COMPANION_SUFFIX
        for index, output in enumerate(self.outputs):
            if output.name == name:
                self.outputs[index] = Output(name, old, output.column, fit_only=True)
                self.outputs.append(Output(companion, ColumnType.VARCHAR, output.column))
        self.warnings.append(
            f"{self.label}.{name} is {old} and could not become {new}: every value is in "
            f"{companion}, the values that fit stay in {name}"
        )
        return companion


def plan_table(
    spec: TableSpec,
    existing: dict[str, ColumnType] | None,
    batch: LogBatch,
    limits: Limits,
    unfit: Collection[tuple[tuple[str, str], str]] = (),
) -> TablePlan:
    """The changes that let `spec`'s rows of `batch` load into the table as it is (`existing`).
    `unfit`: (table, column) pairs whose guessed type a value of the batch did not fit."""
    plan = TablePlan(spec, create=None if existing is not None else {}, max_length=limits.max_length)
    current = dict(existing or {})
    if plan.create is not None:
        plan.create.update(spec.preset)
        current.update(spec.preset)
    room = limits.max_columns - len(current)
    dropped: list[str] = []
    for name, column in spec.columns.items():
        companion = name + COMPANION_SUFFIX
        if name in current and companion in current:
            plan.outputs.append(Output(name, current[name], column, fit_only=True))
            plan.outputs.append(Output(companion, ColumnType.VARCHAR, column))
            continue
        old = current.get(name)
        if old is None and room <= 0:
            dropped.append(name)
            continue
        room -= old is None
        new, verify = _type_after_load(spec, column, old, batch, (spec.ref, name) in unfit)
        plan.outputs.append(Output(name, new, column, verify=verify))
        if plan.create is not None:
            plan.create[name] = new
        elif old is None:
            plan.add[name] = new
        elif new != old:
            plan.widen[name] = (old, new)
    if dropped:
        plan.warnings.append(
            f"{plan.label} has {limits.max_columns} columns, the most this warehouse takes: "
            f"not loaded: {', '.join(sorted(dropped))}"
        )
    return plan


def _type_after_load(
    spec: TableSpec, column: ColumnSpec, old: ColumnType | None, batch: LogBatch, unfit: bool
) -> tuple[ColumnType, bool]:
    """The column's type once the batch is in, and whether the load must verify each value.

    Strings make a timestamp and non-negative integers an integer only if every value fits:
    the sample events decide at once when one does not; otherwise the load verifies."""
    if column.fixed is not None:
        return join(old, column.fixed) or column.fixed, False
    candidate = join(old, join_all({_KIND_TYPES[kind] for kind in column.kinds})) or ColumnType.VARCHAR
    if candidate is ColumnType.TIMESTAMP:
        strings = [s for s in column.sources if Kind.STRING in s.kinds]
        if unfit or not batch.samples_pass(spec, strings, looks_like_timestamp):
            return join(old, ColumnType.VARCHAR) or ColumnType.VARCHAR, False
        return candidate, True
    unsigned = [s for s in column.sources if Kind.UINTEGER in s.kinds]
    if candidate is ColumnType.INTEGER and unsigned:
        if unfit or not batch.samples_pass(spec, unsigned, fits_bigint):
            return ColumnType.VARCHAR, False
        return candidate, True
    return candidate, False
