"""The storage interface every engine implements (SQLite embedded, PostgreSQL for teams).

The log is a sequence of positions (`seq`, a gap-free 64-bit counter assigned at commit,
visible in commit order). It is stored in *segments*: tables holding a contiguous seq
range. The newest segment takes appends; when it holds `segment_rows` rows it is sealed
and a new one starts. Retention drops whole sealed segments once every consumer has
passed them, never deleting rows one by one (the lesson of RudderStack's datasets and
Centrifuge's dropped databases, peers.md §2).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from trackyard.store.archive import ArchiveTables
from trackyard.store.coordination import CoordinationTables
from trackyard.store.delivery import DeliveryTables
from trackyard.store.errors import StoreError, StoreUnavailable

__all__ = ["StoreError", "StoreUnavailable"]

DEFAULT_SEGMENT_ROWS = 1_000_000
DEFAULT_DEDUPE_WINDOW_S = 24 * 3600
MAX_FAILURE_BODY = 32 * 1024


class SourceExists(StoreError):
    pass


class SourceNotFound(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class Source:
    id: int
    name: str
    slug: str
    write_key: str
    created_ms: int
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "write_key": self.write_key,
            "created_ms": self.created_ms,
            "enabled": self.enabled,
        }


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1.6 µs more per event
class LogRecord:
    """One normalised event on its way into the log."""

    source_id: int
    message_id: str
    received_ms: int
    type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class FailureRecord:
    """An event that failed validation on ingest, kept with its reason (Segment: 'Failed on ingest')."""

    source_id: int
    received_ms: int
    code: str
    reason: str
    body: bytes

    @classmethod
    def of(cls, source_id: int, received_ms: int, code: str, reason: str, item: object) -> FailureRecord:
        return cls(source_id, received_ms, code, reason, failure_body(item))


def failure_body(item: object) -> bytes:
    """The failed event whole when it fits, else a summary: always valid JSON."""
    try:
        body = orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError):  # e.g. nested deeper than orjson writes
        body = b""
    if not body or len(body) > MAX_FAILURE_BODY:
        body = orjson.dumps({**_summary(item), "_truncated": True})
    return body


def _summary(item: object) -> dict[str, Any]:
    """The short top-level fields (type, ids, event name) of an event too big or deep to keep."""
    if not isinstance(item, dict):
        return {}
    summary: dict[str, Any] = {}
    for key, value in item.items():
        if len(summary) >= 20:
            break
        short = value is None or isinstance(value, bool | int | float)
        short = short or (isinstance(value, str) and len(value) <= 128)
        if short and isinstance(key, str) and len(key) <= 64:
            summary[key] = value
    return summary


@dataclass(slots=True)  # not frozen, as LogRecord: every consumer builds one per event read
class StoredEvent:
    seq: int
    source_id: int
    received_ms: int
    body: bytes

    def event(self) -> dict[str, Any]:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class LogColumns:
    """Events of the log as three columns, for a consumer that takes them in bulk (the
    warehouse loader): no object per event, and little Python work holding the GIL."""

    seqs: Sequence[int]
    source_ids: Sequence[int]
    bodies: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class StoredFailure:
    id: int
    source_id: int
    received_ms: int
    code: str
    reason: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    first_seq: int
    last_seq: int  # first_seq - 1 while empty
    min_received_ms: int | None
    max_received_ms: int | None
    rows: int
    sealed: bool

    @property
    def table(self) -> str:
        return segment_table(self.id)


@dataclass(frozen=True, slots=True)
class AppendResult:
    stored: int
    duplicates: int
    failed: int


def segment_table(segment_id: int) -> str:
    return f"log_{segment_id:06d}"


_SLUG_STRIP = re.compile(r"[^a-z0-9]+")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,62}$")


def source_slug(name: str) -> str:
    """Schema-safe slug of a source name: lower case, underscores, never starting with a digit."""
    slug = _SLUG_STRIP.sub("_", name.lower()).strip("_") or "source"
    return f"_{slug}" if slug[0].isdigit() else slug


def check_source_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"source name {name!r} is invalid: use 1–63 letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class Store(DeliveryTables, ArchiveTables, CoordinationTables, ABC):
    """Storage for configuration, the event log, consumer positions and delivery records.

    Methods are synchronous and thread-safe; async callers run them on threads. The
    delivery records (DeliveryTables) are portable SQL over two primitives each engine
    provides: `_transaction()` and `_query()`.
    """

    kind: str

    @abstractmethod
    def migrate(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- configuration -------------------------------------------------------------
    @abstractmethod
    def create_source(self, name: str, write_key: str) -> Source: ...

    @abstractmethod
    def list_sources(self) -> list[Source]: ...

    def get_source(self, name: str) -> Source:
        for source in self.list_sources():
            if source.name == name:
                return source
        raise SourceNotFound(f"source {name!r} does not exist (see `trackyard source list`)")

    @abstractmethod
    def get_setting(self, key: str) -> str | None: ...

    @abstractmethod
    def set_setting(self, key: str, value: str) -> None: ...

    # -- the log ---------------------------------------------------------------------
    @abstractmethod
    def append(self, records: Sequence[LogRecord], failures: Sequence[FailureRecord] = ()) -> AppendResult:
        """Store records and failures in one transaction, dropping records whose
        (source_id, message_id) is already in the log within the dedupe window.
        Raises StoreUnavailable when nothing could be committed."""

    @abstractmethod
    def read_log(
        self, after: int = 0, limit: int = 1000, source_id: int | None = None, since_ms: int | None = None
    ) -> list[StoredEvent]:
        """Events with seq > after, in seq order, optionally of one source and received at or after since_ms."""

    def read_log_columns(self, after: int = 0, limit: int = 1000) -> LogColumns:
        """`read_log(after, limit)` as columns: seq, source_id and body of each event."""
        events = self.read_log(after, limit)
        return LogColumns([e.seq for e in events], [e.source_id for e in events], [e.body for e in events])

    @abstractmethod
    def head(self) -> int:
        """The seq of the newest committed event (0 when the log is empty)."""

    @abstractmethod
    def segments(self) -> list[Segment]: ...

    @abstractmethod
    def read_failures(
        self, source_id: int | None = None, since_ms: int | None = None, limit: int = 1000
    ) -> list[StoredFailure]: ...

    @abstractmethod
    def prune_dedupe(self, now_ms: int) -> int:
        """Forget message ids older than the dedupe window; returns how many were forgotten."""

    # -- consumers -------------------------------------------------------------------
    @abstractmethod
    def get_position(self, consumer: str) -> int | None: ...

    @abstractmethod
    def set_position(self, consumer: str, position: int) -> None: ...
