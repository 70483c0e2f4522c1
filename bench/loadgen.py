"""Open-loop load at a fixed rate, as a separate process, printing JSON on stdout.

Request i is *due* at start + i / rate, whether or not earlier requests have been
answered; its latency is measured from that due time, so a server that stalls is charged
for the queue it causes (no coordinated omission). Requests go out over a bounded pool of
keep-alive connections, every event with a unique messageId.

    python bench/loadgen.py --port 8088 --path /v1/batch --events 100 --rate 400 --seconds 10 \
        --authorization 'Basic ...' --tag 5f3a9c1e-h0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from payload import batch_body, single_body, templates

TICK_S = 0.001


@dataclass
class Stats:
    latencies_us: list[int] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    started: float = 0.0
    finished: float = 0.0


class Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        status = _take_response(self.buffer)
        if status is not None and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


def _take_response(buffer: bytearray) -> int | None:
    """Remove one complete response from `buffer` and return its status, or None if incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    length = 0
    for line in bytes(buffer[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    total = end + 4 + length
    if len(buffer) < total:
        return None
    status = int(buffer[9:12])
    del buffer[:total]
    return status


def request_builder(args: argparse.Namespace) -> Callable[[int], bytes]:
    parts = templates()
    head = (
        f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"Authorization: {args.authorization}\r\nContent-Type: application/json\r\n"
    ).encode()

    def build(number: int) -> bytes:
        if args.events == 0:
            body = single_body(parts, args.tag, number)
        else:
            body = batch_body(parts, args.tag, number * args.events, args.events)
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    return build


async def produce(queue: asyncio.Queue[tuple[int, float] | None], total: int, rate: float) -> None:
    """Put each request on the queue at its due time (checked every millisecond)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while sent < total:
        due = min(total, int((loop.time() - start) * rate) + 1)
        for number in range(sent, due):
            queue.put_nowait((number, start + number / rate))
        sent = due
        await asyncio.sleep(TICK_S)


async def work(
    queue: asyncio.Queue[tuple[int, float] | None],
    connection: Connection,
    build: Callable[[int], bytes],
    stats: Stats,
) -> None:
    loop = asyncio.get_running_loop()
    while (item := await queue.get()) is not None:
        number, due = item
        try:
            status = await connection.request(build(number))
        except ConnectionError:
            stats.failed += 1
            return
        stats.latencies_us.append(int((loop.time() - due) * 1e6))
        if status == 200:
            stats.ok += 1
        else:
            stats.failed += 1


async def run(args: argparse.Namespace) -> Stats:
    loop = asyncio.get_running_loop()
    build = request_builder(args)
    total = min(int(args.rate * args.seconds), args.max_requests)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    connections = [
        (await loop.create_connection(Connection, args.host, args.port))[1] for _ in range(args.connections)
    ]
    stats = Stats(started=time.monotonic())
    workers = [asyncio.create_task(work(queue, conn, build, stats)) for conn in connections]
    await produce(queue, total, args.rate)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=args.seconds + 30)
    stats.finished = time.monotonic()
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    return stats


def report(stats: Stats) -> dict[str, object]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "ok": stats.ok,
        "failed": stats.failed,
        "duration_s": stats.finished - stats.started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "latencies_us": stats.latencies_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--events", type=int, default=0, help="events per request; 0: one bare event")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--authorization", required=True)
    parser.add_argument("--tag", required=True, help="messageId prefix, unique to this process and run")
    parser.add_argument("--report", help="write the JSON report to this file (default: stdout)")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        stats = asyncio.run(run(args))
    else:
        stats = uvloop.run(run(args))
    output = orjson.dumps(report(stats))
    if args.report:  # a file: a report over a pipe's 64 KB was cut short once the event loop ran
        Path(args.report).write_bytes(output)
        return
    os.set_blocking(sys.stdout.fileno(), True)
    sys.stdout.buffer.write(output)


if __name__ == "__main__":
    main()
