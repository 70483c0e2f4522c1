"""One batch of the log inside an in-memory DuckDB, where it is flattened and typed.

Python never walks an event: the bodies go to DuckDB as one Arrow column (built from
buffers, no per-event conversion), DuckDB reports the distinct structures (`shapes`),
and every table is then one generated SELECT that extracts all its paths with one parse
per event (`json_extract_string(j, [pointers])`) and casts them to the planned types.
A DuckDB warehouse inserts straight from that SELECT; another dialect reads it as Arrow.
Track events are parsed once: each event table's rows go to a staging table first, and
`tracks` takes its columns from the staging tables wherever they hold them as `tracks`
would (same type, same paths), extracting from the events only for the other groups.

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
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from trackyard.store.base import LogColumns
from trackyard.warehouse.naming import literal, quote
from trackyard.warehouse.shape import Kind, Path, Shape, add_structure
from trackyard.warehouse.tables import ColumnSpec, Group, Load, Source, TableSpec
from trackyard.warehouse.types import ColumnType

TRACKS = "tracks"
SQL_TYPES = {
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.TIMESTAMP: "TIMESTAMP",
    ColumnType.VARCHAR: "VARCHAR",
}
TIMESTAMP_PATTERN = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?"
ARROW_BATCH_ROWS = 65_536
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
        self._shapes: dict[Group, Shape] | None = None
        self._stages: dict[Group, _Stage] = {}
        conn.execute("SET TimeZone = 'UTC'").fetchall()
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
        """The shape of each group of events, with one sample event per distinct structure
        (found once: the loader's thread finds them while the previous batch loads)."""
        if self._shapes is None:
            self._shapes = self._find_shapes()
        return self._shapes

    def _find_shapes(self) -> dict[Group, Shape]:
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
        """The SELECT producing the table's rows of this batch, one column per output.

        An event table's rows are extracted once into a staging table, which `tracks` then
        reads instead of parsing the same events again: ask for the event tables first
        (`load_order`)."""
        if _is_event_table(table):
            return self._staged_select(table, outputs)
        if table.name == TRACKS and table.load is Load.APPEND:
            return self._tracks_select(table, outputs)
        return self._extracting_select(table, outputs)

    def load_order(self, tables: Iterable[TableSpec]) -> list[TableSpec]:
        """The tables in the order their rows must be asked for: `tracks` after the event tables.
        Starts a load: stages of an earlier (rolled back) attempt are forgotten."""
        self._stages = {}
        return sorted(tables, key=lambda table: table.name == TRACKS and table.load is Load.APPEND)

    def _extracting_select(
        self, table: TableSpec, outputs: Sequence[Output], by_name: bool | None = None
    ) -> str:
        """Rows extracted from the events of the table's groups (`by_name`: of their event names
        only; by default all track events for `tracks`)."""
        by_name = table.name != TRACKS if by_name is None else by_name
        extraction = _Extraction(
            [s for o in outputs for s in o.column.sources if s.constant is None], by_name
        )
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

    def _staged_select(self, table: TableSpec, outputs: Sequence[Output]) -> str:
        stage = _Stage(f"stage_{len(self._stages) + 1}", table, {o.name: o for o in outputs})
        self.conn.execute(
            f"CREATE OR REPLACE TEMP TABLE {stage.name} AS {self._extracting_select(table, outputs)}"
        ).fetchall()
        for group in table.groups:
            self._stages[group] = stage
        return f"SELECT {', '.join(quote(o.name) for o in outputs)} FROM {stage.name}"

    def _tracks_select(self, table: TableSpec, outputs: Sequence[Output]) -> str:
        """`tracks` from the staged event tables where they hold its columns as they are,
        extracting from the events only for the other groups (no table, other types)."""
        parts, extracted, used = [], [], set()
        for group in table.groups:
            stage = self._stages.get(group)
            if stage is None or not stage.feeds(outputs):
                extracted.append(group)
            elif stage.name not in used:
                used.add(stage.name)
                parts.append(f"SELECT {', '.join(stage.expression(o) for o in outputs)} FROM {stage.name}")
        if extracted:
            parts.append(self._extracting_select(replace(table, groups=extracted), outputs, bool(parts)))
        return " UNION ALL ".join(parts)

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
        """The text as the guessed type, or an error naming the column where it does not fit.
        The conversion runs once per value: `coalesce` evaluates the error only where it gave NULL."""
        self._verified.append((table.ref, output.name))
        error = f"error('trackyard-unfit:{len(self._verified) - 1}')"
        if output.type is ColumnType.TIMESTAMP:
            safe = (
                f"CASE WHEN regexp_full_match({text}, '{TIMESTAMP_PATTERN}') "
                f"THEN CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP) END"
            )
        else:
            safe = _cast(output.type, text, booleans, cast="TRY_CAST")
        return f"coalesce({safe}, CASE WHEN {text} IS NOT NULL THEN {error} END)"

    def _one(self, sql: str) -> tuple:
        """The one row of an aggregate (fetched to the end: DuckDB keeps an unfinished result busy)."""
        return self.conn.execute(sql).fetchall()[0]


@dataclass(frozen=True)
class _Stage:
    """An event table's rows of the batch, extracted once into a temporary table."""

    name: str
    table: TableSpec
    outputs: dict[str, Output]

    def feeds(self, outputs: Sequence[Output]) -> bool:
        """Whether every `tracks` output is a column of the stage with the same values, or one
        this event table has no path for (NULL)."""
        return all(self._same(o) or o.name not in self.table.columns for o in outputs)

    def expression(self, output: Output) -> str:
        if output.name in self.outputs:
            return quote(output.name)
        return f"CAST(NULL AS {SQL_TYPES[output.type]})"

    def _same(self, output: Output) -> bool:
        """Same type, every value kept, and the same paths in the same order (the last non-null wins)."""
        mine = self.outputs.get(output.name)
        if mine is None or mine.type is not output.type or mine.fit_only or output.fit_only:
            return False
        paths = [s.path for s in mine.column.sources if s.constant is None]
        ours = set(paths)
        return paths == [s.path for s in output.column.sources if s.constant is None and s.path in ours]


class _Extraction:
    """The inner SELECT: each path's text (`v[i]`) and, where needed, its JSON type (`t[i]`)."""

    def __init__(self, sources: Sequence[Source], by_name: bool) -> None:
        self.by_name = by_name
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
        return f"SELECT {', '.join(columns)} FROM ev WHERE {_filter(table, self.by_name)}"


def arrow_page(page: LogColumns) -> pa.RecordBatch:
    """seq, source_id and body of a page of the log; the bodies are copied once, as one buffer."""
    offsets = pa.array(itertools.accumulate(map(len, page.bodies), initial=0), pa.int32())
    bodies = pa.StringArray.from_buffers(
        len(page.bodies), offsets.buffers()[1], pa.py_buffer(b"".join(page.bodies))
    )
    return pa.RecordBatch.from_arrays(
        [pa.array(page.seqs, pa.int64()), pa.array(page.source_ids, pa.int32()), bodies],
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


def _is_event_table(table: TableSpec) -> bool:
    """A table of track events of some names (not `tracks`, which has them all)."""
    return (
        table.name != TRACKS
        and table.load is Load.APPEND
        and all(group.type == "track" for group in table.groups)
    )


def _filter(table: TableSpec, by_name: bool) -> str:
    """The rows of `ev` this table takes: its groups (`by_name` False: track events of any name)."""
    by_source: dict[tuple[int, str], set[str]] = {}
    for group in table.groups:
        by_source.setdefault((group.source_id, group.type), set()).add(group.event or "")
    conditions = []
    for (source_id, type_), events in sorted(by_source.items()):
        condition = f"source_id = {source_id} AND type = {literal(type_)}"
        if type_ == "track" and by_name:
            names = f"event IN ({', '.join(literal(e) for e in sorted(events))})"
            condition += f" AND ({names} OR event IS NULL)" if "" in events else f" AND {names}"
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
