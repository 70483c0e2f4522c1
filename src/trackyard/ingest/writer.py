"""The writer process: the embedded store's appends and dedupe window, beside the serving process.

Single `/v1/t` requests were bound by the serving process's one GIL (~98 µs of CPU per
request). About a quarter of it was the committer thread's Python work (hashing ids, the
dedupe window, binding rows), and each of its SQLite calls then waited for the GIL while the
event loop held it: a commit of ~10 events took ~1 ms in serve against 0.19 ms alone. Here
the serving event loop frames each group and writes it to a child process
(`writer_worker.py`) that owns the appends and the window, and resolves the group's futures
when the answer comes: no thread, no GIL hand-over. The child is the only process that
appends, as the embedded store requires: it starts after serve has taken its lock, takes
the database's writer lock before it reads the log, and dies with serve.

A writer that exits or breaks the protocol fails the group it held and the groups waiting,
with StoreUnavailable (answered 503, so SDKs retry; the next writer rebuilds its window from
the log, so what had been committed is dropped as a duplicate), and another is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from trackyard.ingest.children import frame, read_frame_async, start_child
from trackyard.ingest.committer import count_received, settle
from trackyard.ingest.writer_worker import append_frame
from trackyard.store import AppendResult, FailureRecord, LogRecord, StoreUnavailable
from trackyard.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
RESTART_DELAY_S = 0.2


# -- the serving process's side ----------------------------------------------------------
@dataclass(slots=True)
class _Exchange:
    """One request to the writer, answered in order: a group of commits, or a prune."""

    futures: list[asyncio.Future[dict[str, Any]]] = field(default_factory=list)
    records: list[LogRecord] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)
    prune_ms: int | None = None

    def request(self) -> bytes:
        if self.prune_ms is not None:
            return frame({"prune": self.prune_ms}, b"")
        return append_frame(self.records, self.failures)


class WriterClient:
    """Group commit through the writer process, driven by the serving event loop.

    No thread: the loop frames each group, writes it, and resolves the group's futures when
    the answer arrives, so no commit waits for the GIL to come back from the event loop (a
    committer thread's commit of ~10 events took ~1 ms in serve against 0.19 ms alone). One
    exchange is in flight at a time and the next group forms meanwhile, as in `GroupCommitter`.
    """

    def __init__(self, store: SQLiteStore, max_group_events: int = 20_000) -> None:
        self.store = store
        self.max_group_events = max_group_events
        self.listeners: list[Callable[[], None]] = []  # called on the loop after each commit that stored
        self._waiting: deque[_Exchange] = deque()
        self._in_flight: _Exchange | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(await self._start_process()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def commit(self, records: Sequence[LogRecord], failures: Sequence[FailureRecord]) -> None:
        """Return once records and failures are durably committed; raise StoreUnavailable otherwise."""
        tail = self._waiting[-1] if self._waiting else None
        if tail is None or tail.prune_ms is not None or len(tail.records) >= self.max_group_events:
            tail = _Exchange()
            self._waiting.append(tail)
        tail.records.extend(records)
        tail.failures.extend(failures)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        tail.futures.append(future)
        self._send_next()
        await future

    async def prune_dedupe(self, now_ms: int) -> int:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Exchange([future], prune_ms=now_ms))
        self._send_next()
        return int((await future)["pruned"])

    def _send_next(self) -> None:
        if self._in_flight is not None or not self._waiting or self._writer is None:
            return
        self._in_flight = self._waiting.popleft()
        self._writer.write(self._in_flight.request())

    def _answered(self, header: dict[str, Any]) -> None:
        exchange, self._in_flight = self._in_flight, None
        if exchange is None:
            raise ValueError("an answer with no request in flight")
        if "unavailable" in header:
            settle(exchange.futures, StoreUnavailable(header["unavailable"]))
        else:
            settle(exchange.futures, header)
            if "result" in header:
                self._counted(AppendResult(*header["result"]))
        self._send_next()

    def _counted(self, result: AppendResult) -> None:
        count_received(result)
        if result.stored:
            for listener in self.listeners:
                listener()

    async def _keep_running(self, reader: asyncio.StreamReader) -> None:
        """Read the writer's answers; when it exits, fail what it held and what waits, start another."""
        try:
            while True:
                self._send_next()
                with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError):
                    while True:
                        meta, _ = await read_frame_async(reader)
                        self._answered(orjson.loads(meta))
                code = await self._stop_process()
                log.warning("writer process exited with %s; starting another", code)
                self._fail_all(StoreUnavailable(f"the writer process exited with {code}; retry"))
                reader = await self._restarted()
        finally:
            self._fail_all(StoreUnavailable("the server is stopping"))
            await asyncio.shield(self._stop_process())

    async def _restarted(self) -> asyncio.StreamReader:
        """Another writer, after a pause; while none can start, each failed try fails (503) the
        commits that waited for it."""
        while True:
            await asyncio.sleep(RESTART_DELAY_S)
            try:
                return await self._start_process()
            except OSError:
                log.exception("could not start a writer process; retrying")
                self._fail_all(StoreUnavailable("no writer process could start; retry"))

    async def _start_process(self) -> asyncio.StreamReader:
        store = self.store
        arguments = [str(store.path), store.synchronous, str(store.segment_rows)]
        arguments += [str(store.dedupe_window_s), str(store.busy_timeout_ms)]
        self._process, reader, self._writer = await start_child("trackyard.ingest.writer_worker", *arguments)
        return reader

    async def _stop_process(self) -> int | None:
        """Close the socket (a writer finishes what it holds, then exits) and reap it."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        process = self._process
        if process is None:
            return None
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        return process.returncode

    def _fail_all(self, error: StoreUnavailable) -> None:
        exchanges = [self._in_flight, *self._waiting] if self._in_flight else list(self._waiting)
        self._in_flight = None
        self._waiting.clear()
        for exchange in exchanges:
            settle(exchange.futures, error)
