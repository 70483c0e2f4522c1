"""Group commit: concurrent requests share one store transaction.

Request handlers hand their records to a single writer thread and wait on a future.
The thread takes everything queued at that moment, appends it in one transaction,
then resolves every waiting future. While one commit runs, the next group forms, so
commits grow with load and durability costs one commit per group, not per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client import Counter

from trackyard.store import AppendResult, FailureRecord, LogRecord, Store, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

RECEIVED = Counter(
    "trackyard_events_received_total",
    "Events received by the collection API, by outcome (stored, duplicate, failed on ingest).",
    ["outcome"],
)
_STORED, _DUPLICATE, _FAILED = (RECEIVED.labels(outcome) for outcome in ("stored", "duplicate", "failed"))


@dataclass(slots=True)
class _Pending:
    records: Sequence[LogRecord]
    failures: Sequence[FailureRecord]
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class Committer(Protocol):
    """Group commit, in a thread here or through the embedded store's writer process (writer.py)."""

    listeners: list[Callable[[], None]]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def commit(self, records: Sequence[LogRecord], failures: Sequence[FailureRecord]) -> None: ...

    async def prune_dedupe(self, now_ms: int) -> int: ...


class GroupCommitter:
    def __init__(self, store: Store, max_group_events: int = 20_000) -> None:
        self.store = store
        self.max_group_events = max_group_events
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="trackyard-committer", daemon=True)
        self.listeners: list[Callable[[], None]] = []  # called on the writer thread after each commit
        self.commits = 0
        self.stored = 0
        self.duplicates = 0

    async def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    async def prune_dedupe(self, now_ms: int) -> int:
        return await asyncio.to_thread(self.store.prune_dedupe, now_ms)

    async def commit(self, records: Sequence[LogRecord], failures: Sequence[FailureRecord]) -> None:
        """Return once records and failures are durably committed; raise StoreUnavailable otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(records, failures, future, loop))
        await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            group: list[_Pending] = [first]  # type: ignore[list-item]
            size = len(group[0].records)
            while size < self.max_group_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)  # type: ignore[arg-type]
                size += len(item.records)  # type: ignore[union-attr]
            self._commit_group(group)

    def _commit_group(self, group: list[_Pending]) -> None:
        records = [record for pending in group for record in pending.records]
        failures = [failure for pending in group for failure in pending.failures]
        try:
            result: AppendResult = self.store.append(records, failures)
        except Exception as exc:
            if not isinstance(exc, StoreUnavailable):
                log.exception("append failed")
                exc = StoreUnavailable(f"the event log could not commit: {exc}")
            _answer(group, exc)
            return
        self.commits += 1
        self.stored += result.stored
        self.duplicates += result.duplicates
        count_received(result)
        _answer(group, None)
        if result.stored:
            for listener in self.listeners:
                listener()


def count_received(result: AppendResult) -> None:
    _STORED.inc(result.stored)
    _DUPLICATE.inc(result.duplicates)
    _FAILED.inc(result.failed)


def _answer(group: list[_Pending], error: BaseException | None) -> None:
    """Resolve the group's futures with one wake-up of each event loop, not one per request:
    each wake-up is a write to the loop's self-pipe (a system call holding the GIL)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for pending in group:
        by_loop.setdefault(pending.loop, []).append(pending.future)
    for loop, futures in by_loop.items():
        loop.call_soon_threadsafe(settle, futures, error)


def settle(futures: Iterable[asyncio.Future[T]], outcome: T | BaseException) -> None:
    """Resolve each future not yet done (a caller may have gone) with a result or an error."""
    for future in futures:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
