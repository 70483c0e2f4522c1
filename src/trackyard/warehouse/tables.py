"""Which tables a batch writes, and which columns each gets from which JSON paths (§4.1–§4.4).

Pure: from the shape of each group of events (one source, one call type, one event
name) to `TableSpec`s. The rules, decided once:

- common columns on every event table: `id` (messageId), `received_at`, `sent_at`,
  `timestamp`, `original_timestamp`, `anonymous_id`, `user_id`, `context_*`, `uuid_ts`
  (the load time). The four times are always timestamps (the normaliser writes them in
  one ISO-8601 form), the ids always varchar; `integrations`, `_metadata`, `type`, `channel` and `version` are not
  loaded;
- nested objects are flattened with `_` and the whole path snake-cased
  (`context.userAgent` → `context_user_agent`); arrays are one varchar column of JSON;
- a property or trait whose name is a reserved column (`id`, `received_at`, `sent_at`,
  `timestamp`, `original_timestamp`, `anonymous_id`, `user_id`, `uuid`, `uuid_ts`,
  `loaded_at`, `event`, `event_text`, `context_*`; `group_id` in groups and accounts;
  `previous_id` in aliases) is not loaded — schema.md's rule;
- keys that snake-case to the same name share a column: the value of the key that
  sorts last wins; a key with no ASCII letter or digit has no name and is not loaded;
- an event whose slug is a built-in table name (`Pages` → `pages`) gets a `_` prefix:
  table `_pages`, and `tracks.event` says `_pages`;
- `pages` is created with every column dbt's `segment` package reads (§4.8, §4.9),
  the only columns that exist before a value arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from trackyard.warehouse.naming import literal, safe_identifier, snake_case
from trackyard.warehouse.shape import SCALARS, Kind, Path, Shape, leaves_under, pointer
from trackyard.warehouse.types import ColumnType

BUILTIN_TABLES = frozenset(
    {"tracks", "identifies", "users", "pages", "screens", "groups", "accounts", "aliases"}
)
RESERVED_COLUMNS = frozenset(
    {
        "id",
        "received_at",
        "sent_at",
        "timestamp",
        "original_timestamp",
        "anonymous_id",
        "user_id",
        "uuid",
        "uuid_ts",
        "loaded_at",
        "event",
        "event_text",
    }
)
COMPANION_SUFFIX = "__varchar"

_VARCHAR = ColumnType.VARCHAR
_TIMESTAMP = ColumnType.TIMESTAMP

# The columns dbt-labs/segment reads from `pages`, created with the table (§4.8).
DBT_PAGES_COLUMNS: dict[str, ColumnType] = {
    "id": _VARCHAR,
    "anonymous_id": _VARCHAR,
    "user_id": _VARCHAR,
    "received_at": _TIMESTAMP,
    "sent_at": _TIMESTAMP,
    "timestamp": _TIMESTAMP,
    "url": _VARCHAR,
    "path": _VARCHAR,
    "title": _VARCHAR,
    "search": _VARCHAR,
    "referrer": _VARCHAR,
    "context_campaign_source": _VARCHAR,
    "context_campaign_medium": _VARCHAR,
    "context_campaign_name": _VARCHAR,
    "context_campaign_term": _VARCHAR,
    "context_campaign_content": _VARCHAR,
    "context_ip": _VARCHAR,
    "context_user_agent": _VARCHAR,
}

_TIMES = (
    ("received_at", "receivedAt"),
    ("sent_at", "sentAt"),
    ("timestamp", "timestamp"),
    ("original_timestamp", "originalTimestamp"),
)
_EVENT_TABLES = {"identify": "identifies", "page": "pages", "screen": "screens", "group": "groups"}


class Load(StrEnum):
    APPEND = "append"  # one row per event, deduplicated on id
    UPSERT = "upsert"  # one row per id; a new value replaces the old, a missing one keeps it


@dataclass(frozen=True, slots=True)
class Group:
    """Events of one source, call type and (for track) event name."""

    source_id: int
    type: str
    event: str | None


@dataclass(frozen=True, slots=True)
class Source:
    """Where a column's value comes from: a JSON path, or a constant (an SQL expression)."""

    path: Path = ()
    kinds: frozenset[Kind] = frozenset()
    constant: str | None = None

    @property
    def pointer(self) -> str:
        return pointer(self.path)


@dataclass
class ColumnSpec:
    name: str
    sources: list[Source] = field(default_factory=list)  # coalesced: the last non-null wins
    fixed: ColumnType | None = None  # ids are varchar, uuid_ts is a timestamp, whatever they look like
    canonical_time: bool = False  # written by the normaliser as YYYY-MM-DDTHH:MM:SS.mmmZ (UTC)

    @property
    def kinds(self) -> frozenset[Kind]:
        """What the column's paths held, objects aside (those became other columns)."""
        return frozenset().union(*(source.kinds for source in self.sources)) - {Kind.OBJECT}


@dataclass
class TableSpec:
    schema: str
    name: str
    load: Load
    groups: list[Group]
    columns: dict[str, ColumnSpec]
    preset: dict[str, ColumnType] = field(default_factory=dict)  # created with the table
    key_pointer: str = "/messageId"  # the JSON path of `id`

    @property
    def ref(self) -> tuple[str, str]:
        return (self.schema, self.name)


@dataclass(frozen=True)
class Naming:
    """Names bounded for one dialect."""

    max_length: int

    def column(self, path: Path, reserved: frozenset[str]) -> str | None:
        name = snake_case(" ".join(path))
        if not name or name in reserved or name.startswith("context_"):
            return None
        return safe_identifier(name, self.max_length)

    def context_column(self, path: Path) -> str | None:
        name = snake_case(" ".join(path))
        return safe_identifier(f"context_{name}", self.max_length) if name else None

    def event_table(self, event: str) -> str | None:
        slug = snake_case(event)
        if not slug:
            return None
        return safe_identifier(f"_{slug}" if slug in BUILTIN_TABLES else slug, self.max_length)


def table_specs(
    shapes: dict[Group, Shape], schemas: dict[int, str], naming: Naming, uuid_ts: str
) -> list[TableSpec]:
    """Every table the groups of a batch write to, with their columns."""
    tables: dict[tuple[str, str], TableSpec] = {}
    slugs: dict[str, dict[str, str | None]] = {}
    for group, shape in sorted(shapes.items(), key=lambda item: _group_order(item[0])):
        schema = schemas.get(group.source_id) or f"source_{group.source_id}"
        if group.type == "track":
            slugs.setdefault(schema, {})[group.event or ""] = naming.event_table(group.event or "")
        for spec in _specs_for_group(group, shape, schema, naming, uuid_ts):
            _add_table(tables, spec)
    for (schema, name), spec in tables.items():
        if name == "tracks":
            spec.columns["event"] = ColumnSpec(
                "event", [Source(constant=_slug_case(slugs[schema]))], _VARCHAR
            )
    return list(tables.values())


def _add_table(tables: dict[tuple[str, str], TableSpec], spec: TableSpec) -> None:
    existing = tables.get(spec.ref)
    if existing is None:
        tables[spec.ref] = spec
        return
    existing.groups.extend(spec.groups)
    for name, column in spec.columns.items():
        merge_column(existing.columns, name, column)


def _slug_case(slugs: dict[str, str | None]) -> str:
    """`tracks.event` per row: the event table's name, from the event name (column `event` of the batch)."""
    branches = " ".join(
        f"WHEN {literal(event)} THEN {literal(slug)}" for event, slug in slugs.items() if slug
    )
    return f"CASE event {branches} END" if branches else "NULL"


def _group_order(group: Group) -> tuple[int, str, str]:
    return (group.source_id, group.type, group.event or "")


def _specs_for_group(
    group: Group, shape: Shape, schema: str, naming: Naming, uuid_ts: str
) -> list[TableSpec]:
    if group.type == "track":
        return _track_specs(group, shape, schema, naming, uuid_ts)
    if group.type == "alias":
        columns = _common_columns(shape, naming, uuid_ts)
        _add_path(columns, "previous_id", shape, ("previousId",), fixed=_VARCHAR)
        return [TableSpec(schema, "aliases", Load.APPEND, [group], columns)]
    if group.type not in _EVENT_TABLES:
        return []
    table = _EVENT_TABLES[group.type]
    root = ("traits",) if group.type in ("identify", "group") else ("properties",)
    reserved = RESERVED_COLUMNS | ({"group_id"} if group.type == "group" else frozenset())
    columns = _common_columns(shape, naming, uuid_ts)
    _add_leaves(columns, shape, root, naming, reserved)
    preset: dict[str, ColumnType] = {}
    if group.type in ("page", "screen"):
        _add_path(columns, "name", shape, ("name",))
        _add_path(columns, "category", shape, ("category",))
        preset = DBT_PAGES_COLUMNS if group.type == "page" else {}
    if group.type == "group":
        _add_path(columns, "group_id", shape, ("groupId",), fixed=_VARCHAR)
    specs = [TableSpec(schema, table, Load.APPEND, [group], columns, preset)]
    key = ("userId",) if group.type == "identify" else ("groupId",)
    if group.type in ("identify", "group") and shape.get(key, set()) & SCALARS:
        specs.append(_profile_spec(group, shape, schema, naming, uuid_ts, root, reserved))
    return specs


def _track_specs(group: Group, shape: Shape, schema: str, naming: Naming, uuid_ts: str) -> list[TableSpec]:
    columns = _common_columns(shape, naming, uuid_ts)
    _add_path(columns, "event_text", shape, ("event",), fixed=_VARCHAR)
    summary = {
        name: ColumnSpec(name, list(c.sources), c.fixed, c.canonical_time) for name, c in columns.items()
    }
    specs = [TableSpec(schema, "tracks", Load.APPEND, [group], summary)]
    table = naming.event_table(group.event or "")
    if table is not None:
        columns["event"] = ColumnSpec("event", [Source(constant=literal(table))], fixed=_VARCHAR)
        _add_leaves(columns, shape, ("properties",), naming, RESERVED_COLUMNS)
        specs.append(TableSpec(schema, table, Load.APPEND, [group], columns))
    return specs


def _profile_spec(
    group: Group,
    shape: Shape,
    schema: str,
    naming: Naming,
    uuid_ts: str,
    root: Path,
    reserved: frozenset[str],
) -> TableSpec:
    """`users` (from identify, by userId) or `accounts` (from group, by groupId)."""
    key = ("userId",) if group.type == "identify" else ("groupId",)
    columns: dict[str, ColumnSpec] = {}
    _add_path(columns, "id", shape, key, fixed=_VARCHAR)
    _add_time(columns, "received_at", shape, "receivedAt")
    columns["uuid_ts"] = ColumnSpec("uuid_ts", [Source(constant=uuid_ts)], fixed=_TIMESTAMP)
    _add_leaves(columns, shape, root, naming, reserved)
    table = "users" if group.type == "identify" else "accounts"
    return TableSpec(schema, table, Load.UPSERT, [group], columns, key_pointer=pointer(key))


def _common_columns(shape: Shape, naming: Naming, uuid_ts: str) -> dict[str, ColumnSpec]:
    columns: dict[str, ColumnSpec] = {}
    _add_path(columns, "id", shape, ("messageId",), fixed=_VARCHAR)
    for column, key in _TIMES:
        _add_time(columns, column, shape, key)
    _add_path(columns, "anonymous_id", shape, ("anonymousId",), fixed=_VARCHAR)
    _add_path(columns, "user_id", shape, ("userId",), fixed=_VARCHAR)
    for path, kinds in leaves_under(shape, ("context",)):
        name = naming.context_column(path[1:])
        if name is not None:
            _add_source(columns, name, Source(path, kinds))
    columns["uuid_ts"] = ColumnSpec("uuid_ts", [Source(constant=uuid_ts)], fixed=_TIMESTAMP)
    return columns


def _add_leaves(
    columns: dict[str, ColumnSpec], shape: Shape, root: Path, naming: Naming, reserved: frozenset[str]
) -> None:
    for path, kinds in leaves_under(shape, root):
        name = naming.column(path[len(root) :], reserved)
        if name is not None:
            _add_source(columns, name, Source(path, kinds))


def _add_path(
    columns: dict[str, ColumnSpec], name: str, shape: Shape, path: Path, fixed: ColumnType | None = None
) -> None:
    kinds = frozenset(shape.get(path, set()))
    if kinds & SCALARS:
        _add_source(columns, name, Source(path, kinds), fixed)


def _add_time(columns: dict[str, ColumnSpec], name: str, shape: Shape, key: str) -> None:
    """One of the four times the normaliser writes: always a timestamp, in one canonical UTC form."""
    _add_path(columns, name, shape, (key,), fixed=_TIMESTAMP)
    if name in columns:
        columns[name].canonical_time = True


def _add_source(
    columns: dict[str, ColumnSpec], name: str, source: Source, fixed: ColumnType | None = None
) -> None:
    column = columns.setdefault(name, ColumnSpec(name, fixed=fixed))
    column.sources.append(source)


def merge_column(columns: dict[str, ColumnSpec], name: str, other: ColumnSpec) -> None:
    """Add `other`'s sources to the column of the same name (sources of one path merge their kinds)."""
    column = columns.get(name)
    if column is None:
        columns[name] = ColumnSpec(name, list(other.sources), other.fixed, other.canonical_time)
        return
    for source in other.sources:
        for index, mine in enumerate(column.sources):
            if mine.path == source.path and mine.constant == source.constant:
                column.sources[index] = Source(mine.path, mine.kinds | source.kinds, mine.constant)
                break
        else:
            column.sources.append(source)
