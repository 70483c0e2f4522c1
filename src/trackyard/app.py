"""Wiring: the store, the group committer and the HTTP apps of one `trackyard serve` process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trackyard.config import Config
from trackyard.delivery.engine import DeliveryEngine
from trackyard.delivery.worker import WorkerOptions
from trackyard.ingest.committer import GroupCommitter
from trackyard.ingest.http import ROUTES, CollectionAPI, Receive, Scope, Send
from trackyard.ingest.sources import SourceDirectory
from trackyard.spec import now_ms
from trackyard.store import Store

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a serving process holds, started and stopped by the ASGI lifespan."""

    config: Config
    store: Store
    sources: SourceDirectory = field(init=False)
    committer: GroupCommitter = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sources = SourceDirectory(self.store)
        self.committer = GroupCommitter(self.store)
        self.delivery = DeliveryEngine(
            self.store,
            WorkerOptions(
                max_age_s=self.config.retry_max_age_s,
                backoff_base_s=self.config.retry_backoff_base_s,
                backoff_cap_s=self.config.retry_backoff_cap_s,
            ),
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.sources.reload)
        loop = asyncio.get_running_loop()
        self.committer.listeners.append(lambda: loop.call_soon_threadsafe(self.delivery.notify))
        self.committer.start()
        self._tasks.append(asyncio.create_task(self._maintain()))
        self._tasks.append(asyncio.create_task(self.delivery.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.committer.stop)
        self.store.close()

    async def _maintain(self) -> None:
        """Refresh the write-key cache and expire old message ids, in the background."""
        ticks = 0
        while True:
            await asyncio.sleep(5)
            ticks += 1
            try:
                await asyncio.to_thread(self.sources.reload)
                if ticks % 12 == 0:
                    await asyncio.to_thread(self.store.prune_dedupe, now_ms())
            except Exception:
                log.exception("maintenance failed; retrying in 5 s")


def build_app(runtime: Runtime) -> Any:
    collection = CollectionAPI(runtime.config, runtime.sources, runtime.committer, fallback=_pages)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(runtime, receive, send)
        else:
            await collection(scope, receive, send)

    return app


async def _lifespan(runtime: Runtime, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.start()
            except Exception as exc:
                log.exception("start-up failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


_HOME = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>trackyard</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem">
<h1>trackyard</h1><p>The collection API is running. The web app arrives in a later release;
until then use the <code>trackyard</code> command.</p>
<p><a href="/docs">API reference</a> · <a href="/health">health</a></p></body></html>"""


def _api_reference() -> str:
    rows = "".join(f"<li><code>POST {path}</code></li>" for path in ROUTES)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>trackyard API</title></head>'
        '<body style="font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto">'
        "<h1>Collection API</h1><p>Segment's HTTP Tracking API. Authenticate with the source's write key "
        "as the Basic auth user name or as <code>writeKey</code> in the body.</p>"
        f"<ul>{rows}<li><code>GET /v1/projects/&lt;writeKey&gt;/settings</code></li></ul></body></html>"
    )


async def _pages(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if method not in ("GET", "HEAD"):
        status, ctype, body = 404, b"application/json", b'{"code":"not_found","message":"no such route"}'
    elif path == "/":
        status, ctype, body = 200, b"text/html; charset=utf-8", _HOME.encode()
    elif path == "/docs":
        status, ctype, body = 200, b"text/html; charset=utf-8", _api_reference().encode()
    elif path == "/metrics":
        status, ctype, body = 200, CONTENT_TYPE_LATEST.encode(), generate_latest()
    elif path == "/health":
        status, ctype, body = 200, b"application/json", orjson.dumps({"status": "ok"})
    else:
        status, ctype, body = 404, b"application/json", b'{"code":"not_found","message":"no such route"}'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
