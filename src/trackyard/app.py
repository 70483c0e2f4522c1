"""Wiring: the store, the group committer and the HTTP apps of one `trackyard serve` process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trackyard.admin.server import build_admin_app
from trackyard.archive.wiring import replay_scheduler
from trackyard.background import BackgroundProcess, heartbeat
from trackyard.config import Config
from trackyard.delivery.engine import DeliveryEngine
from trackyard.delivery.worker import WorkerOptions
from trackyard.ingest.committer import Committer, GroupCommitter
from trackyard.ingest.http import CollectionAPI, Receive, Scope, Send
from trackyard.ingest.parsers import ParserPool, default_parsers
from trackyard.ingest.sources import SourceDirectory
from trackyard.ingest.writer import WriterClient
from trackyard.spec import now_ms
from trackyard.store import Store
from trackyard.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

MAINTAIN_EVERY_S = 5
PRUNE_DEDUPE_EVERY_S = 60


@dataclass
class Runtime:
    """Everything a serving process holds, started and stopped by the ASGI lifespan."""

    config: Config
    store: Store
    sources: SourceDirectory = field(init=False)
    committer: Committer = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sources = SourceDirectory(self.store)
        self.committer = (
            WriterClient(self.store)
            if isinstance(self.store, SQLiteStore) and self.config.ingest_writer == "process"
            else GroupCommitter(self.store)
        )
        parsers = self.config.ingest_parsers
        self.parsers = ParserPool(default_parsers() if parsers is None else parsers)
        self.delivery = DeliveryEngine(
            self.store,
            WorkerOptions(
                max_age_s=self.config.retry_max_age_s,
                backoff_base_s=self.config.retry_backoff_base_s,
                backoff_cap_s=self.config.retry_backoff_cap_s,
            ),
            owner=self.process_id,
            lease_ttl_s=self.config.lease_ttl_s,
        )
        self.background = BackgroundProcess(self.config.data_dir)

    async def start(self) -> None:
        """Start what this process's role does: ingest, the workers, or both."""
        await asyncio.to_thread(
            self.store.heartbeat, self.process_id, self.config.role, socket.gethostname(), os.getpid()
        )
        every_s = max(0.5, self.config.lease_ttl_s / 5)
        self._tasks.append(
            asyncio.create_task(heartbeat(self.store, self.process_id, self.config.role, every_s))
        )
        if self.config.serves_ingest:
            await asyncio.to_thread(self.sources.reload)
            loop = asyncio.get_running_loop()
            self.committer.listeners.append(lambda: loop.call_soon_threadsafe(self.delivery.notify))
            await self.committer.start()
            await self.parsers.start()
            self._tasks.append(asyncio.create_task(self._maintain()))
        if self.config.runs_workers:
            self._tasks.append(asyncio.create_task(self.delivery.run()))
            self._tasks.append(asyncio.create_task(self.background.run()))
            scheduler = replay_scheduler(self.config, self.store, self.delivery.options)
            self._tasks.append(asyncio.create_task(scheduler.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.config.serves_ingest:
            await self.parsers.stop()
            await self.committer.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.forget_process, self.process_id)
        self.store.close()

    async def _maintain(self) -> None:
        """Refresh the write-key cache and expire old message ids, in the background: every
        minute, or every half window when the dedupe window is shorter than two minutes."""
        prune_every_s = min(PRUNE_DEDUPE_EVERY_S, self.config.dedupe_window_s / 2)
        prune_every_ticks = max(1, int(prune_every_s // MAINTAIN_EVERY_S))
        ticks = 0
        while True:
            await asyncio.sleep(MAINTAIN_EVERY_S)
            ticks += 1
            try:
                await asyncio.to_thread(self.sources.reload)
                if ticks % prune_every_ticks == 0:
                    await self.committer.prune_dedupe(now_ms())
            except Exception:
                log.exception("maintenance failed; retrying in %d s", MAINTAIN_EVERY_S)


def build_app(runtime: Runtime) -> Any:
    """The collection API (ingest roles), the web app (with --admin), /health and /metrics (always)."""
    config = runtime.config
    fallback: Any = _operations
    if config.admin:
        fallback = build_admin_app(runtime.store, config, sources_changed=runtime.sources.reload)
    http = (
        CollectionAPI(config, runtime.sources, runtime.committer, fallback=fallback, parsers=runtime.parsers)
        if config.serves_ingest
        else fallback
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(runtime, receive, send)
        else:
            await http(scope, receive, send)

    return app


async def _operations(scope: Scope, receive: Receive, send: Send) -> None:
    """/health and /metrics for processes that serve neither the web app nor the API."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        status, content_type, body = 200, b"application/json", b'{"status":"ok"}'
    elif scope["path"] == "/metrics":
        status, content_type, body = 200, CONTENT_TYPE_LATEST.encode(), generate_latest()
    else:
        status, content_type, body = (
            404,
            b"application/json",
            b'{"code":"not_found","message":"no such route"}',
        )
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
