"""One batch of the log inside an in-memory DuckDB, where it is flattened and typed.

Python never walks an event: the bodies go to DuckDB as one Arrow column (built from
buffers, no per-event conversion), DuckDB reports the distinct structures (`shapes`),
and every table is then one generated SELECT that extracts all its paths with one parse
per event (`json_extract_string(j, [pointers])`) and casts them to the planned types.
A DuckDB warehouse inserts straight from that SELECT; another dialect reads it as Arrow.

Types that depend on every value — a string column is a timestamp only if each value is
an ISO-8601 date-time, an integer column must fit 64 bits — are checked on the sample
events first (one per distinct structure) and then *while loading*: the SELECT raises
`Unfit` at the first value that does not fit, the load rolls back, and the loader plans
that column as varchar and loads again. A second pass over the batch is never paid when
the guess was right, which is almost always.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from trackyard.store import StoredEvent
from trackyard.warehouse.naming import literal, quote
from trackyard.warehouse.shape import Kind, Path, Shape, add_structure
from trackyard.warehouse.tables import ColumnSpec, Group, Load, Source, TableSpec
from trackyard.warehouse.types import ColumnType

TIMESTAMP_PATTERN = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?"
ARROW_BATCH_ROWS = 65_536
ENGINE_MEMORY_LIMIT = "2GB"  # the in-memory DuckDB spills to disk beyond this
_TIMESTAMP_SHAPE = re.compile(TIMESTAMP_PATTERN)
_UNFIT = re.compile(r"trackyard-unfit:(\d+)")

# What a value of each JSON type can become without loss, for a column that keeps its type.
_FITS: dict[ColumnType, tuple[str, ...]] = {
    ColumnType.BOOLEAN: ("BOOLEAN",),
    ColumnType.INTEGER: ("BOOLEAN", "BIGINT", "UBIGINT"),
    ColumnType.FLOAT: ("BOOLEAN", "BIGINT", "UBIGINT", "DOUBLE"),
    ColumnType.TIMESTAMP: ("VARCHAR",),
}


@dataclass(frozen=True, slots=True)
class Output:
    """One column a SELECT produces: its name and type, and where its values come from.

    `verify`: the type was guessed from samples; a value that does not fit raises Unfit.
    `fit_only` (a column that could not be widened): only values of its type, the rest is
    NULL here and kept whole in its `__varchar` companion."""

    name: str
    type: ColumnType
    column: ColumnSpec
    verify: bool = False
    fit_only: bool = False


class Unfit(Exception):
    """A value of the batch does not fit the type guessed for its column."""

    def __init__(self, table: tuple[str, str], column: str) -> None:
        super().__init__(f"{table[0]}.{table[1]}.{column}: a value does not fit the guessed type")
        self.table = table
        self.column = column


def looks_like_timestamp(value: Any) -> bool:
    return not isinstance(value, str) or _TIMESTAMP_SHAPE.fullmatch(value) is not None


def fits_bigint(value: Any) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


class LogBatch:
    """Events with seq in [first_seq, last_seq], as table `ev` of an in-memory DuckDB."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, chunks: Sequence[pa.RecordBatch]) -> None:
        """`chunks`: pages of the log as `arrow_page` makes them, in seq order."""
        self.conn = conn
        self.samples: dict[Group, list[Any]] = {}
        self._verified: list[tuple[tuple[str, str], str]] = []
        conn.execute(f"SET TimeZone = 'UTC'; SET memory_limit = '{ENGINE_MEMORY_LIMIT}'").fetchall()
        self._load(chunks)

    def _load(self, chunks: Sequence[pa.RecordBatch]) -> None:
        self.size = sum(chunk.num_rows for chunk in chunks)
        if not self.size:
            return
        arrow = pa.Table.from_batches(chunks)
        self.first_seq = chunks[0]["seq"][0].as_py()
        self.last_seq = chunks[-1]["seq"][-1].as_py()
        self.conn.register("log_batch", arrow)
        self.conn.execute(
            "CREATE OR REPLACE TEMP TABLE ev AS SELECT seq, source_id, f[1] AS type, f[2] AS event, "
            "f[3] AS message_id, body AS j FROM (SELECT seq, source_id, body, "
            "json_extract_string(body, ['/type', '/event', '/messageId']) AS f FROM log_batch)"
        ).fetchall()
        self.conn.unregister("log_batch")
        self._drop_repeated_ids()

    def _drop_repeated_ids(self) -> None:
        """A messageId seen twice in one source keeps its first event (the log dedupes only within
        its window; the warehouse keeps `id` unique per table)."""
        (repeated,) = self._one("SELECT count(*) - count(DISTINCT (source_id, message_id)) FROM ev")
        if repeated:
            self.conn.execute(
                "DELETE FROM ev WHERE seq NOT IN (SELECT min(seq) FROM ev GROUP BY source_id, message_id)"
            ).fetchall()

    def shapes(self) -> dict[Group, Shape]:
        """The shape of each group of events, with one sample event per distinct structure."""
        rows = self.conn.execute(
            "SELECT source_id, type, event, json_structure(j) AS s, any_value(j) FROM ev GROUP BY ALL"
        ).fetchall()
        shapes: dict[Group, Shape] = {}
        for source_id, type_, event, structure, sample in rows:
            group = Group(int(source_id), type_, event if type_ == "track" else None)
            add_structure(shapes.setdefault(group, {}), structure)
            self.samples.setdefault(group, []).append(orjson.loads(sample))
        return shapes

    def samples_pass(self, table: TableSpec, sources: Iterable[Source], test: Callable[[Any], bool]) -> bool:
        """Whether the values of these paths in the table's sample events all pass `test`."""
        samples = [sample for group in table.groups for sample in self.samples.get(group, ())]
        return all(test(_value_at(sample, source.path)) for source in sources for sample in samples)

    # -- the rows of a table -------------------------------------------------------------
    def select(self, table: TableSpec, outputs: Sequence[Output]) -> str:
        """The SELECT producing the table's rows of this batch, one column per output."""
        extraction = _Extraction([s for o in outputs for s in o.column.sources if s.constant is None])
        exprs = [f"{self._value(table, o, extraction)} AS {quote(o.name)}" for o in outputs]
        if table.load is Load.APPEND:
            return f"SELECT {', '.join(exprs)} FROM ({extraction.sql(table)})"
        latest = [
            f"arg_max({quote(o.name)}, seq) FILTER (WHERE {quote(o.name)} IS NOT NULL) AS {quote(o.name)}"
            for o in outputs
            if o.name != "id"
        ]
        return (
            f"SELECT id, {', '.join(latest)} FROM (SELECT seq, {', '.join(exprs)} "
            f"FROM ({extraction.sql(table)})) WHERE id IS NOT NULL GROUP BY id"
        )

    def arrow(self, sql: str) -> Iterator[pa.RecordBatch]:
        yield from self.conn.sql(sql).to_arrow_reader(ARROW_BATCH_ROWS)

    def unfit(self, error: BaseException) -> Unfit | None:
        """The Unfit a failed load stopped at, if that is why it failed."""
        match = _UNFIT.search(str(error))
        if match is None:
            return None
        return Unfit(*self._verified[int(match.group(1))])

    def _value(self, table: TableSpec, output: Output, extraction: _Extraction) -> str:
        values = []
        for source in output.column.sources:
            if source.constant is not None:
                values.append(source.constant)
            elif output.fit_only:
                extraction.need_type(source)
                values.append(_fitting(output.type, source, extraction))
            else:
                text, booleans = extraction.text(source), Kind.BOOLEAN in source.kinds
                if output.column.canonical_time:
                    values.append(f"CAST({text} AS TIMESTAMP)")
                elif output.verify:
                    values.append(self._verified_value(table, output, text, booleans))
                else:
                    values.append(_cast(output.type, text, booleans))
        return values[0] if len(values) == 1 else f"coalesce({', '.join(reversed(values))})"

    def _verified_value(self, table: TableSpec, output: Output, text: str, booleans: bool) -> str:
        """The text as the guessed type, or an error naming the column where it does not fit."""
        self._verified.append((table.ref, output.name))
        error = f"error('trackyard-unfit:{len(self._verified) - 1}')"
        if output.type is ColumnType.TIMESTAMP:
            safe = f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
            return (
                f"(CASE WHEN {text} IS NULL THEN NULL WHEN regexp_full_match({text}, '{TIMESTAMP_PATTERN}') "
                f"AND {safe} IS NOT NULL THEN {safe} ELSE {error} END)"
            )
        safe = _cast(output.type, text, booleans, cast="TRY_CAST")
        return f"(CASE WHEN {text} IS NULL THEN NULL WHEN {safe} IS NOT NULL THEN {safe} ELSE {error} END)"

    def _one(self, sql: str) -> tuple:
        """The one row of an aggregate (fetched to the end: DuckDB keeps an unfinished result busy)."""
        return self.conn.execute(sql).fetchall()[0]


class _Extraction:
    """The inner SELECT: each path's text (`v[i]`) and, where needed, its JSON type (`t[i]`)."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.texts: dict[str, int] = {}
        self.types: dict[str, int] = {}
        for source in sources:
            self.texts.setdefault(source.pointer, len(self.texts) + 1)
            if Kind.OBJECT in source.kinds:
                self.need_type(source)

    def need_type(self, source: Source) -> None:
        self.types.setdefault(source.pointer, len(self.types) + 1)

    def text(self, source: Source) -> str:
        text = f"v[{self.texts[source.pointer]}]"
        if Kind.OBJECT in source.kinds:  # objects at this path became other columns
            return f"(CASE WHEN {self.type(source)} = 'OBJECT' THEN NULL ELSE {text} END)"
        return text

    def type(self, source: Source) -> str:
        return f"t[{self.types[source.pointer]}]"

    def sql(self, table: TableSpec) -> str:
        columns = ["seq", "event"]
        if self.texts:
            columns.append(f"json_extract_string(j, {_pointers(self.texts)}) AS v")
        if self.types:
            columns.append(f"json_type(j, {_pointers(self.types)}) AS t")
        return f"SELECT {', '.join(columns)} FROM ev WHERE {_filter(table)}"


def arrow_page(page: Sequence[StoredEvent]) -> pa.RecordBatch:
    """seq, source_id and body of a page of the log; the bodies are copied once, as one buffer."""
    offsets = pa.array(itertools.accumulate((len(e.body) for e in page), initial=0), pa.int32())
    bodies = pa.StringArray.from_buffers(
        len(page), offsets.buffers()[1], pa.py_buffer(b"".join(e.body for e in page))
    )
    return pa.RecordBatch.from_arrays(
        [
            pa.array([e.seq for e in page], pa.int64()),
            pa.array([e.source_id for e in page], pa.int32()),
            bodies,
        ],
        names=["seq", "source_id", "body"],
    )


def _cast(type_: ColumnType, text: str, booleans: bool, cast: str = "CAST") -> str:
    """SQL turning a value's text into `type_` (`cast`: TRY_CAST gives NULL instead of an error)."""
    if type_ is ColumnType.VARCHAR:
        return text
    if type_ is ColumnType.TIMESTAMP:
        return f"CAST({cast}({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
    if type_ is ColumnType.BOOLEAN:
        return f"{cast}({text} AS BOOLEAN)"
    sql_type = "BIGINT" if type_ is ColumnType.INTEGER else "DOUBLE"
    if booleans:
        return f"(CASE {text} WHEN 'true' THEN 1 WHEN 'false' THEN 0 ELSE {cast}({text} AS {sql_type}) END)"
    return f"{cast}({text} AS {sql_type})"


def _fitting(type_: ColumnType, source: Source, extraction: _Extraction) -> str:
    """The value if it fits `type_` without loss, else NULL (never an error)."""
    text, json_type = extraction.text(source), extraction.type(source)
    fits = ", ".join(f"'{name}'" for name in _FITS[type_])
    if type_ is ColumnType.TIMESTAMP:
        value = f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
        return f"(CASE WHEN {json_type} IN ({fits}) AND regexp_full_match({text}, '{TIMESTAMP_PATTERN}') THEN {value} END)"
    if type_ is ColumnType.BOOLEAN:
        return f"(CASE WHEN {json_type} IN ({fits}) THEN CAST({text} AS BOOLEAN) END)"
    sql_type = "BIGINT" if type_ is ColumnType.INTEGER else "DOUBLE"
    value = f"(CASE {text} WHEN 'true' THEN 1 WHEN 'false' THEN 0 ELSE TRY_CAST({text} AS {sql_type}) END)"
    return f"(CASE WHEN {json_type} IN ({fits}) THEN {value} END)"


def _filter(table: TableSpec) -> str:
    """The rows of `ev` this table takes: its groups (track events of all names for `tracks`)."""
    by_source: dict[tuple[int, str], set[str]] = {}
    for group in table.groups:
        by_source.setdefault((group.source_id, group.type), set()).add(group.event or "")
    conditions = []
    for (source_id, type_), events in sorted(by_source.items()):
        condition = f"source_id = {source_id} AND type = {literal(type_)}"
        if type_ == "track" and table.name != "tracks":
            condition += f" AND event IN ({', '.join(literal(e) for e in sorted(events))})"
        conditions.append(f"({condition})")
    return " OR ".join(conditions)


def _value_at(event: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(event, dict):
            return None
        event = event.get(key)
    return event


def _pointers(indexes: dict[str, int]) -> str:
    return "[" + ", ".join(literal(p) for p in indexes) + "]"
