"""Destination configuration, attempts, dead letters and per-minute counts.

The SQL here is portable between SQLite and PostgreSQL (`?` placeholders, translated by
the engine; `ON CONFLICT … DO UPDATE`; `RETURNING`). Each engine provides three
primitives — a write transaction, a query, and its DDL — and inherits the rest, so the
two engines cannot drift apart in behaviour.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from trackyard.store.errors import StoreError

ATTEMPTS_KEPT_PER_DESTINATION = 5000


class DestinationExists(StoreError):
    pass


class DestinationNotFound(StoreError):
    pass


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    id: int
    name: str
    source_id: int
    type: str
    settings: dict[str, Any]
    enabled: bool
    filters: dict[str, Any]
    created_ms: int
    updated_ms: int

    @property
    def consumer(self) -> str:
        return f"destination:{self.id}"


@dataclass(frozen=True, slots=True)
class Attempt:
    destination_id: int
    at_ms: int
    status: int  # HTTP status, 0 when no response (timeout, connection error)
    verdict: str  # delivered, retry, give_up
    latency_ms: float
    events: int
    message_ids: list[str]
    reason: str = ""
    request: str = ""  # bounded, secrets redacted; kept for failures
    response: str = ""  # bounded excerpt


@dataclass(frozen=True, slots=True)
class DeadLetter:
    destination_id: int
    seq: int
    message_id: str
    endpoint: str
    body: Any
    reason: str
    status: int
    request: str
    response: str
    failed_ms: int
    id: int = 0
    state: str = "dead"  # dead, or queued for re-sending


@dataclass
class MinuteCounts:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    filtered: int = 0

    def add(self, other: MinuteCounts) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.failed += other.failed
        self.filtered += other.filtered

    def __bool__(self) -> bool:
        return bool(self.delivered or self.retried or self.failed or self.filtered)


@dataclass
class WorkerState:
    """What a running worker reports for a destination (the CLI runs in another process)."""

    destination_id: int
    retrying: int
    in_flight: int
    updated_ms: int = field(default_factory=lambda: int(time.time() * 1000))


def _now_ms() -> int:
    return int(time.time() * 1000)


class DeliveryTables:
    """Mixin of the store engines: everything the delivery engine keeps."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def set_position(self, consumer: str, position: int) -> None: ...

    @abstractmethod
    def head(self) -> int: ...

    # -- configuration ------------------------------------------------------------------
    def create_destination(
        self,
        source_id: int,
        type_: str,
        name: str,
        settings: dict[str, Any],
        filters: dict[str, Any] | None = None,
    ) -> DestinationConfig:
        """Create an enabled destination that starts at the current end of the log."""
        now = _now_ms()
        if self._query("SELECT 1 FROM destinations WHERE name = ?", (name,)):
            raise DestinationExists(f"a destination named {name!r} already exists")
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO destinations (name, source_id, type, settings, enabled, filters, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
                (name, source_id, type_, _dumps(settings), _dumps(filters or {}), now, now),
            )
        config = self.get_destination(name)
        self.set_position(config.consumer, self.head())
        return config

    def list_destinations(self) -> list[DestinationConfig]:
        rows = self._query(
            "SELECT id, name, source_id, type, settings, enabled, filters, created_ms, updated_ms "
            "FROM destinations ORDER BY id"
        )
        return [_destination(row) for row in rows]

    def get_destination(self, name: str) -> DestinationConfig:
        for config in self.list_destinations():
            if config.name == name:
                return config
        raise DestinationNotFound(f"destination {name!r} does not exist (see `trackyard destination list`)")

    def update_destination(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        settings: dict[str, Any] | None = None,
        filters: dict[str, Any] | None = None,
    ) -> DestinationConfig:
        config = self.get_destination(name)
        with self._transaction() as cur:
            cur.execute(
                "UPDATE destinations SET enabled = ?, settings = ?, filters = ?, updated_ms = ? WHERE id = ?",
                (
                    int(config.enabled if enabled is None else enabled),
                    _dumps(config.settings if settings is None else settings),
                    _dumps(config.filters if filters is None else filters),
                    max(_now_ms(), config.updated_ms + 1),
                    config.id,
                ),
            )
        return self.get_destination(name)

    # -- attempts and counts ------------------------------------------------------------
    def record_delivery(
        self,
        attempts: Sequence[Attempt],
        counts: dict[tuple[int, int], MinuteCounts],
        states: Sequence[WorkerState] = (),
    ) -> None:
        """Attempts, per-minute counts and worker states, in one transaction."""
        with self._transaction() as cur:
            if attempts:
                cur.executemany(
                    "INSERT INTO delivery_attempts (destination_id, at_ms, status, verdict, latency_ms, events, "
                    "message_ids, reason, request, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            a.destination_id,
                            a.at_ms,
                            a.status,
                            a.verdict,
                            a.latency_ms,
                            a.events,
                            _dumps(a.message_ids),
                            a.reason,
                            a.request,
                            a.response,
                        )
                        for a in attempts
                    ],
                )
            for (destination_id, minute), c in counts.items():
                cur.execute(
                    "INSERT INTO delivery_minutes (destination_id, minute, delivered, retried, failed, filtered) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (destination_id, minute) DO UPDATE SET "
                    "delivered = delivery_minutes.delivered + excluded.delivered, "
                    "retried = delivery_minutes.retried + excluded.retried, "
                    "failed = delivery_minutes.failed + excluded.failed, "
                    "filtered = delivery_minutes.filtered + excluded.filtered",
                    (destination_id, minute, c.delivered, c.retried, c.failed, c.filtered),
                )
            for state in states:
                cur.execute(
                    "INSERT INTO delivery_workers (destination_id, retrying, in_flight, updated_ms) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (destination_id) DO UPDATE SET retrying = excluded.retrying, "
                    "in_flight = excluded.in_flight, updated_ms = excluded.updated_ms",
                    (state.destination_id, state.retrying, state.in_flight, state.updated_ms),
                )

    def prune_attempts(self, keep: int = ATTEMPTS_KEPT_PER_DESTINATION) -> None:
        for (destination_id,) in self._query("SELECT id FROM destinations"):
            rows = self._query(
                "SELECT id FROM delivery_attempts WHERE destination_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                (destination_id, keep),
            )
            if rows:
                with self._transaction() as cur:
                    cur.execute(
                        "DELETE FROM delivery_attempts WHERE destination_id = ? AND id <= ?",
                        (destination_id, rows[0][0]),
                    )

    def recent_attempts(
        self, destination_id: int, limit: int = 50, failed_only: bool = False
    ) -> list[Attempt]:
        sql = (
            "SELECT destination_id, at_ms, status, verdict, latency_ms, events, message_ids, reason, request, "
            "response FROM delivery_attempts WHERE destination_id = ?"
        )
        if failed_only:
            sql += " AND verdict <> 'delivered'"
        rows = self._query(sql + " ORDER BY id DESC LIMIT ?", (destination_id, limit))
        return [
            Attempt(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]), r[7], r[8], r[9]) for r in rows
        ]

    def delivery_totals(self, destination_id: int) -> MinuteCounts:
        row = self._query(
            "SELECT coalesce(sum(delivered), 0), coalesce(sum(retried), 0), coalesce(sum(failed), 0), "
            "coalesce(sum(filtered), 0) FROM delivery_minutes WHERE destination_id = ?",
            (destination_id,),
        )[0]
        return MinuteCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def delivery_series(self, destination_id: int, since_minute: int) -> list[tuple[int, MinuteCounts]]:
        rows = self._query(
            "SELECT minute, delivered, retried, failed, filtered FROM delivery_minutes "
            "WHERE destination_id = ? AND minute >= ? ORDER BY minute",
            (destination_id, since_minute),
        )
        return [(int(r[0]), MinuteCounts(int(r[1]), int(r[2]), int(r[3]), int(r[4]))) for r in rows]

    def worker_state(self, destination_id: int) -> WorkerState | None:
        rows = self._query(
            "SELECT destination_id, retrying, in_flight, updated_ms FROM delivery_workers WHERE destination_id = ?",
            (destination_id,),
        )
        return WorkerState(*rows[0]) if rows else None

    # -- dead letters -------------------------------------------------------------------
    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        with self._transaction() as cur:
            cur.executemany(
                "INSERT INTO dead_letters (destination_id, seq, message_id, endpoint, body, reason, status, "
                "request, response, failed_ms, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'dead')",
                [
                    (
                        d.destination_id,
                        d.seq,
                        d.message_id,
                        d.endpoint,
                        _dumps(d.body),
                        d.reason,
                        d.status,
                        d.request,
                        d.response,
                        d.failed_ms,
                    )
                    for d in letters
                ],
            )

    def dead_letters(
        self, destination_id: int, state: str | None = None, limit: int = 1000
    ) -> list[DeadLetter]:
        sql = (
            "SELECT destination_id, seq, message_id, endpoint, body, reason, status, request, response, "
            "failed_ms, id, state FROM dead_letters WHERE destination_id = ?"
        )
        params: list[Any] = [destination_id]
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        rows = self._query(sql + " ORDER BY id LIMIT ?", (*params, limit))
        return [
            DeadLetter(r[0], r[1], r[2], r[3], orjson.loads(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], r[11])
            for r in rows
        ]

    def count_dead_letters(self, destination_id: int) -> int:
        return int(
            self._query(
                "SELECT count(*) FROM dead_letters WHERE destination_id = ? AND state = 'dead'",
                (destination_id,),
            )[0][0]
        )

    def requeue_dead_letters(self, destination_id: int) -> int:
        """Mark every dead letter of a destination for re-sending by its worker; returns how many."""
        with self._transaction() as cur:
            rows = cur.execute(
                "UPDATE dead_letters SET state = 'queued' WHERE destination_id = ? AND state = 'dead' RETURNING id",
                (destination_id,),
            ).fetchall()
        return len(rows)

    def take_queued_dead_letters(self, destination_id: int, limit: int = 1000) -> list[DeadLetter]:
        """Claim queued dead letters for re-sending (state 'sending'), oldest first."""
        letters = self.dead_letters(destination_id, "queued", limit)
        if letters:
            with self._transaction() as cur:
                cur.executemany(
                    "UPDATE dead_letters SET state = 'sending' WHERE id = ?", [(d.id,) for d in letters]
                )
        return letters

    def release_dead_letters(self, destination_id: int) -> None:
        """Dead letters a crashed worker was re-sending go back to the queue."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE dead_letters SET state = 'queued' WHERE destination_id = ? AND state = 'sending'",
                (destination_id,),
            )

    def resolve_dead_letters(self, ids: Sequence[int]) -> None:
        """Forget dead letters that were re-sent successfully."""
        with self._transaction() as cur:
            cur.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])

    def bury_dead_letters(self, updates: Sequence[tuple[int, str, int, str, str]]) -> None:
        """Back to 'dead' after a failed re-send: (id, reason, status, request, response)."""
        with self._transaction() as cur:
            cur.executemany(
                "UPDATE dead_letters SET state = 'dead', reason = ?, status = ?, request = ?, response = ?, "
                "failed_ms = ? WHERE id = ?",
                [
                    (reason, status, request, response, _now_ms(), i)
                    for i, reason, status, request, response in updates
                ],
            )


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _destination(row: tuple[Any, ...]) -> DestinationConfig:
    return DestinationConfig(
        id=int(row[0]),
        name=row[1],
        source_id=int(row[2]),
        type=row[3],
        settings=orjson.loads(row[4]),
        enabled=bool(row[5]),
        filters=orjson.loads(row[6]),
        created_ms=int(row[7]),
        updated_ms=int(row[8]),
    )
