"""HTTP for the delivery engine: one connection per concurrency slot, httpx's request and
error model over aiohttp's HTTP/1.1 engine.

Measured with one request per event (bench/delivery.py, docs/performance.md): httpx's
default transport (httpcore over anyio) cost ~0.9 ms of CPU per request, and its pool
assigns requests to connections in time quadratic in their number; the aiohttp transport
used directly, without the client layer's cookies, auth and redirect handling (which
destinations never need), costs less than half of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl

import httpx
from httpx_aiohttp import AiohttpTransport

from trackyard.destinations.base import Request, Response


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every connection: loading the CA bundle costs ~30 ms each time."""
    return ssl.create_default_context()


class HTTPPool:
    """`size` keep-alive connections; `send` waits for a free one."""

    def __init__(self, size: int, timeout: float) -> None:
        self.timeout = timeout
        self._extensions = {
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        }
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._transports = [
            AiohttpTransport(limits=limits, verify=_tls_context()) for _ in range(max(1, size))
        ]
        self._free: asyncio.Queue[AiohttpTransport] = asyncio.Queue()
        for transport in self._transports:
            self._free.put_nowait(transport)

    async def __aenter__(self) -> HTTPPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for transport in self._transports:
            with contextlib.suppress(Exception):
                await transport.aclose()

    async def send(self, request: Request) -> Response:
        """The response, or httpx.TimeoutException / httpx.TransportError."""
        transport = await self._free.get()
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(transport, request)
        except TimeoutError:
            raise httpx.TimeoutException(f"no complete answer within {self.timeout} s") from None
        finally:
            self._free.put_nowait(transport)

    async def _exchange(self, transport: AiohttpTransport, request: Request) -> Response:
        outgoing = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            content=request.body,
            extensions=self._extensions,
        )
        reply = await transport.handle_async_request(outgoing)
        try:
            body = await reply.aread()
        finally:
            await reply.aclose()
        return Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, body)
