"""Parser processes: batch bodies decoded, normalised and serialised beside the serving process.

The serving process is bound by its GIL. Decoding a batch into Python objects, normalising
each event, serialising it again and freeing the objects took about three quarters of the
GIL time per batched event (py-spy --gil, bench/ingest.py); the HTTP work, dedupe and the
commit that must stay in the one writer process took the rest. So bodies of batch requests
go to `TRACKYARD_INGEST_PARSERS` child processes (`python -m trackyard.ingest.parser_worker`)
over a socket pair each, and come back as stored bodies ready to commit. Single events and
small batches are parsed in place: for them the round trip costs more than it saves.

Frames, both ways: two little-endian u32 lengths, then a JSON header and a payload.
Request: header [batch, implied_type, client, received_ms, client_ip], payload the body.
Answer: header {"key", "error", "events": [[messageId, type, size]…], "failures": [[code,
reason, size]…]}, payload the events' stored bodies then the failures' bodies, in order.

A parser that dies, answers nonsense or stops answering fails none of its requests: each
is parsed in place instead, and the parser is killed if need be and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from typing import Any

import orjson

from trackyard.ingest.children import frame, read_frame_async, start_child
from trackyard.ingest.parse import Parsed, RequestError, RequestShape, parse_request

log = logging.getLogger(__name__)

OFFLOAD_MIN_BYTES = 8 * 1024  # smaller bodies are parsed in place
RESTART_DELAY_S = 1.0
ANSWER_TIMEOUT_S = 10.0  # a 500 KB batch takes ~10 ms: a parser this late is stuck, not busy
STOP_TIMEOUT_S = 5.0


def default_parsers() -> int:
    """One parser per core beyond the first (the serving process's), at most four."""
    return max(0, min((os.cpu_count() or 1) - 1, 4))


# -- frames ----------------------------------------------------------------------------
def request_header(shape: RequestShape) -> list[Any]:
    return [shape.batch, shape.implied_type, shape.client, shape.received_ms, shape.client_ip]


def shape_of(header: list[Any]) -> RequestShape:
    return RequestShape(*header)


def answer(body: bytes, shape: RequestShape) -> bytes:
    """The answer frame a parser sends for one request."""
    try:
        parsed = parse_request(body, shape)
    except RequestError as exc:
        return frame({"raise": [exc.status, exc.code, exc.message]}, b"")
    error = parsed.error
    header = {
        "key": parsed.write_key,
        "error": None if error is None else [error.status, error.code, error.message],
        "events": [[message_id, call_type, len(stored)] for message_id, call_type, stored in parsed.events],
        "failures": [[code, reason, len(kept)] for code, reason, kept in parsed.failures],
    }
    payload = b"".join(
        [*(stored for _, _, stored in parsed.events), *(kept for _, _, kept in parsed.failures)]
    )
    return frame(header, payload)


def parsed_from(meta: bytes, payload: bytes) -> Parsed:
    """The serving process's side of `answer`: raises RequestError as parse_request did."""
    header = orjson.loads(meta)
    if "raise" in header:
        raise RequestError(*header["raise"])
    parsed = Parsed(header["key"], error=RequestError(*header["error"]) if header["error"] else None)
    offset = 0
    events = parsed.events
    for message_id, call_type, size in header["events"]:
        events.append((message_id, call_type, payload[offset : offset + size]))
        offset += size
    for code, reason, size in header["failures"]:
        parsed.failures.append((code, reason, payload[offset : offset + size]))
        offset += size
    if offset != len(payload):
        raise ValueError(f"parser answer: {len(payload) - offset} payload bytes left over")
    return parsed


# -- the serving process's side ----------------------------------------------------------
class ParserGone(Exception):
    """The parser holding a request exited (or broke the protocol) before answering it."""


class _Parser:
    """One parser process and the requests it holds, answered in the order sent."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pending: deque[asyncio.Future[tuple[bytes, bytes]]] = deque()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def start(cls) -> _Parser:
        process, reader, writer = await start_child("trackyard.ingest.parser_worker")
        parser = cls(process)
        parser.reader, parser.writer = reader, writer
        return parser

    async def parse(self, body: bytes, shape: RequestShape) -> Parsed:
        assert self.writer is not None
        future: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        try:
            self.writer.write(frame(request_header(shape), body))
            await self.writer.drain()
        except ConnectionError as exc:
            future.cancel()  # its answer will never come; fail_pending skips it
            raise ParserGone(f"parser {self.process.pid} is gone: {exc}") from exc
        try:
            meta, payload = await asyncio.wait_for(future, ANSWER_TIMEOUT_S)  # cancels it on timeout
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()  # stuck: its other requests fail over when its socket closes
            raise ParserGone(f"parser {self.process.pid} did not answer in {ANSWER_TIMEOUT_S:g} s") from exc
        try:
            return parsed_from(meta, payload)
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise ParserGone(f"parser {self.process.pid} answered nonsense: {exc}") from exc

    async def read_answers(self) -> None:
        """Hand each answer to the oldest request; on EOF fail what is left (ParserGone)."""
        assert self.reader is not None
        try:
            while True:
                meta, payload = await read_frame_async(self.reader)
                future = self.pending.popleft()
                if not future.done():
                    future.set_result((meta, payload))
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            self.fail_pending()

    def fail_pending(self) -> None:
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(ParserGone(f"parser {self.process.pid} exited"))

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        with contextlib.suppress(ProcessLookupError):
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class ParserPool:
    """`size` parser processes, each kept running; `parse` picks the least busy."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._parsers: list[_Parser] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for _ in range(self.size):
            self._tasks.append(asyncio.create_task(self._keep_running()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def pids(self) -> list[int]:
        return [parser.process.pid for parser in self._parsers]

    async def parse(self, body: bytes, shape: RequestShape) -> Parsed:
        if len(body) < OFFLOAD_MIN_BYTES or not self._parsers:
            return parse_request(body, shape)
        parser = min(self._parsers, key=lambda candidate: len(candidate.pending))
        try:
            return await parser.parse(body, shape)
        except ParserGone as exc:
            log.warning("%s; parsing its request in place", exc)
            return parse_request(body, shape)

    async def _keep_running(self) -> None:
        while True:
            parser = await _Parser.start()
            self._parsers.append(parser)
            try:
                await parser.read_answers()
            finally:
                self._parsers.remove(parser)
                parser.fail_pending()
                await asyncio.shield(parser.stop())
            log.warning(
                "parser %d exited with %s; starting another", parser.process.pid, parser.process.returncode
            )
            await asyncio.sleep(RESTART_DELAY_S)
