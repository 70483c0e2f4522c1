"""What the web app watches as it happens: a source's events as Server-Sent Events, and the
events received per minute per source, counted from the log and topped up from its tail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from trackyard.admin import service, storage
from trackyard.spec import now_ms
from trackyard.store import Source, Store

WINDOW_MINUTES = 24 * 60
STREAM_SECONDS = 25.0  # then the browser reconnects with Last-Event-ID: no stream outlives a shutdown long
POLL_SECONDS = 0.25
PING_SECONDS = 10.0
BACKLOG = 50
PAGE = 200


class ReceivedCounts:
    """Events received per minute per source over the last 24 h.

    The first read counts the recent segments with one GROUP BY each; every later read
    counts only the events after the highest seq already counted, so a chart refreshed
    every few seconds costs the store almost nothing. Thread-safe.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self._after = 0
        self._lock = threading.Lock()

    def per_source(self, since_minute: int) -> dict[int, dict[int, int]]:
        """source id → minute → count, for minutes at or after `since_minute`."""
        with self._lock:
            self._top_up()
            return {
                source_id: {minute: n for minute, n in minutes.items() if minute >= since_minute}
                for source_id, minutes in self._counts.items()
            }

    def _top_up(self) -> None:
        horizon = now_ms() // 60_000 - WINDOW_MINUTES
        rows, self._after = storage.received_per_minute(self.store, horizon * 60_000, self._after)
        for source_id, minute, count in rows:
            self._counts[source_id][minute] += count
        for minutes in self._counts.values():
            for minute in [m for m in minutes if m < horizon]:
                del minutes[minute]


def received_series(store: Store, counts: ReceivedCounts, hours: int) -> dict[str, Any]:
    """Events received per minute per source in the last `hours`, as sparse [minute, count] pairs."""
    until = now_ms() // 60_000
    since = until - hours * 60 + 1
    per_source = counts.per_source(since)
    sources = []
    for source in store.list_sources():
        if source.enabled:
            minutes = sorted(per_source.get(source.id, {}).items())
            sources.append({"name": source.name, "total": sum(n for _, n in minutes), "counts": minutes})
    return {"since_minute": since, "until_minute": until, "sources": sources}


def delivery_series(store: Store, names: list[str], hours: int) -> dict[str, Any]:
    """Delivery outcomes per minute for each named destination in the last `hours`."""
    until = now_ms() // 60_000
    since = until - hours * 60 + 1
    series = [
        {"name": name, "minutes": service.delivery_per_minute(store, name, since * 60_000)} for name in names
    ]
    return {"since_minute": since, "until_minute": until, "destinations": series}


@dataclass
class Position:
    """How far a live view has read: the log's seq, and the last ingest failure (received_ms, id)."""

    seq: int = 0
    failure_ms: int = 0
    failure_id: int = 0

    def __str__(self) -> str:
        return f"{self.seq}.{self.failure_ms}.{self.failure_id}"

    @classmethod
    def parse(cls, text: str | None) -> Position | None:
        parts = (text or "").split(".")
        if len(parts) != 3 or not all(part.isdigit() and len(part) < 20 for part in parts):
            return None
        return cls(*map(int, parts))


def _message(kind: str, position: Position, data: object) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (str(position).encode(), kind.encode(), orjson.dumps(data))


def _backlog(store: Store, source: Source) -> tuple[list[bytes], Position]:
    """The newest events and failures, oldest first, and the position after them."""
    head = store.head()
    events = storage.newest_events(store, source.id, BACKLOG)
    failures = storage.newest_failures(store, source.id, BACKLOG)
    position = Position(max([head, *(e.seq for e in events)]))
    if failures:
        position.failure_ms, position.failure_id = failures[-1].received_ms, failures[-1].id
    timeline = [(e.received_ms, 0, service.event_view(e)) for e in events]
    timeline += [(f.received_ms, 1, service.failure_view(f)) for f in failures]
    timeline.sort(key=lambda item: (item[0], item[1]))
    kinds = ("event", "failure")
    return [_message(kinds[kind], position, view) for _, kind, view in timeline], position


def _news(store: Store, source: Source, position: Position) -> list[bytes]:
    """What arrived after `position`, which it advances."""
    head = store.head()
    events, failures = service.events_after(
        store, source.id, position.seq, (position.failure_ms, position.failure_id), PAGE
    )
    messages = []
    for event in events:
        position.seq = event.seq
        messages.append(_message("event", position, service.event_view(event)))
    if len(events) < PAGE:
        position.seq = max(position.seq, head)
    for failure in failures:
        position.failure_ms, position.failure_id = failure.received_ms, failure.id
        messages.append(_message("failure", position, service.failure_view(failure)))
    return messages


async def stream(store: Store, source: Source, resume_from: str | None) -> AsyncIterator[bytes]:
    """The live debugger's event stream: the backlog (unless resuming), then whatever arrives,
    for STREAM_SECONDS; the browser's EventSource reconnects and resumes where it left off."""
    yield b"retry: 1000\n\n"
    position = Position.parse(resume_from)
    if position is None:
        backlog, position = await asyncio.to_thread(_backlog, store, source)
        for message in backlog:
            yield message
    started = last_sent = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS:
        messages = await asyncio.to_thread(_news, store, source, position)
        for message in messages:
            yield message
        if messages:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent > PING_SECONDS:
            yield b": ping\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)
