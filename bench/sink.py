"""A fast local sink for the delivery benchmark: counts events and measures their latency.

Each request body is one event or a JSON array of events (trackyard's Webhook
destination). For every event the sink records now − receivedAt, the end-to-end
latency from trackyard's receipt of the event to the sink's receipt of it.
`GET /stats` answers {events, requests, first, last, latencies_ms (a bounded sample)}.

    python bench/sink.py --port 8099
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
import uvicorn

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
SAMPLE_SIZE = 200_000


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.requests = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies_ms: list[float] = []
        self._seen_for_sample = 0

    def record(self, events: list[dict[str, Any]]) -> None:
        now = time.time()
        self.first = self.first or now
        self.last = now
        self.requests += 1
        self.events += len(events)
        for event in events:
            self._sample(now - datetime.fromisoformat(event["receivedAt"]).timestamp())

    def _sample(self, seconds: float) -> None:
        """Reservoir sampling keeps the sample bounded and unbiased over a long run."""
        self._seen_for_sample += 1
        if len(self.latencies_ms) < SAMPLE_SIZE:
            self.latencies_ms.append(seconds * 1000)
        elif (slot := random.randrange(self._seen_for_sample)) < SAMPLE_SIZE:
            self.latencies_ms[slot] = seconds * 1000

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "events": self.events,
                "requests": self.requests,
                "first": self.first,
                "last": self.last,
                "latencies_ms": self.latencies_ms,
            }
        )


STATS = Stats()


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["method"] == "GET" and scope["path"] == "/stats":
        body = STATS.to_json()
    elif scope["method"] == "POST" and scope["path"] == "/reset":
        STATS.reset()
        body = b"{}"
    else:
        data = orjson.loads(b"".join(chunks))
        STATS.record(data if isinstance(data, list) else [data])
        body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
