"""The Segment-compatible HTTP Tracking API as a thin, raw ASGI layer.

Parse, authenticate, validate, hand off to the group committer, answer after the commit.
Raw ASGI rather than a framework: on `/v1/t` the per-request overhead dominates
(limits.md: Starlette costs +26 µs per request, the durable write ~40 µs).
"""

from __future__ import annotations

import base64
import binascii
import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from trackyard.config import Config
from trackyard.ingest.committer import Committer
from trackyard.ingest.parse import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, RequestError, RequestShape
from trackyard.ingest.parsers import ParserPool
from trackyard.ingest.settings_doc import settings_document
from trackyard.ingest.sources import SourceDirectory
from trackyard.spec import now_ms
from trackyard.store import FailureRecord, LogRecord, StoreUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # "single", "batch" or "metrics"
    implied_type: str | None = None
    client: bool = False  # browser and mobile endpoints: context.ip is filled from the connection


_TYPES = ("track", "identify", "page", "screen", "group", "alias")
ROUTES: dict[str, Route] = {
    **{f"/v1/{name}": Route("single", name) for name in _TYPES},
    **{f"/v1/{name[0]}": Route("single", name, client=True) for name in _TYPES},
    "/v1/batch": Route("batch"),
    "/v1/import": Route("batch"),
    "/v1/b": Route("batch", client=True),
    "/v1/m": Route("metrics", client=True),
}
_SUCCESS = b'{"success":true}'


class CollectionAPI:
    """ASGI app serving /v1/*; other paths go to `fallback`."""

    def __init__(
        self,
        config: Config,
        sources: SourceDirectory,
        committer: Committer,
        fallback: ASGIApp | None = None,
        parsers: ParserPool | None = None,
    ) -> None:
        self.config = config
        self.sources = sources
        self.committer = committer
        self.fallback = fallback
        self.parsers = parsers or ParserPool(0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if self.fallback is not None:
                await self.fallback(scope, receive, send)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        method = scope["method"]
        route = ROUTES.get(path)
        is_settings = path.startswith("/v1/projects/") and path.endswith("/settings")
        if route is None and not is_settings:
            if self.fallback is not None:
                await self.fallback(scope, receive, send)
            else:
                await _respond(send, scope, 404, _error_body("not_found", f"no route for {path}"))
            return
        try:
            if method == "OPTIONS":
                await _preflight(send, scope)
            elif is_settings and method in ("GET", "HEAD"):
                await self._settings(scope, send, path)
            elif route is not None and method == "POST":
                await self._collect(scope, receive, send, route)
            else:
                raise RequestError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        except RequestError as exc:
            await _respond(send, scope, exc.status, _error_body(exc.code, exc.message), exc.headers)

    async def _collect(self, scope: Scope, receive: Receive, send: Send, route: Route) -> None:
        limit = MAX_MESSAGE_BYTES if route.kind == "single" else MAX_BATCH_BYTES
        headers = _headers(scope)
        body = await _read_body(receive, limit)
        if headers.get(b"content-encoding", b"").strip().lower() in (b"gzip", b"x-gzip"):
            body = _gunzip(body, limit)
        if route.kind == "metrics":
            await _respond(send, scope, 200, _SUCCESS)
            return
        shape = RequestShape(
            route.kind == "batch", route.implied_type, route.client, now_ms(), self._client_ip(scope, headers)
        )
        parsed = await self.parsers.parse(body, shape)
        source = await self._authenticate(headers, parsed.write_key)
        if parsed.error is not None:
            raise parsed.error
        received_ms = shape.received_ms
        records = [
            LogRecord(source.id, message_id, received_ms, call_type, stored)
            for message_id, call_type, stored in parsed.events
        ]
        failures = [
            FailureRecord(source.id, received_ms, code, reason, kept)
            for code, reason, kept in parsed.failures
        ]
        try:
            await self.committer.commit(records, failures)
        except StoreUnavailable as exc:
            log.warning("answering 503: %s", exc)
            raise RequestError(
                503,
                "store_unavailable",
                "the event log cannot accept events right now; retry later",
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            ) from exc
        await _respond(send, scope, 200, _SUCCESS)

    async def _authenticate(self, headers: dict[bytes, bytes], body_write_key: str | None) -> Any:
        write_key = _basic_user(headers.get(b"authorization", b"")) or body_write_key
        if not write_key:
            raise RequestError(
                401,
                "missing_write_key",
                "no write key: send it as the Basic auth user name or as 'writeKey' in the body",
            )
        source = await self.sources.lookup(write_key)
        if source is None:
            raise RequestError(
                401, "invalid_write_key", "unknown write key: create a source with `trackyard source create`"
            )
        return source

    def _client_ip(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        client = scope.get("client")
        address = client[0] if client else None
        if address and self.config.is_trusted_proxy(address):
            forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
            for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
                if not self.config.is_trusted_proxy(hop):
                    return hop
        return address

    async def _settings(self, scope: Scope, send: Send, path: str) -> None:
        write_key = path[len("/v1/projects/") : -len("/settings")]
        if not write_key or "/" in write_key or await self.sources.lookup(write_key) is None:
            raise RequestError(404, "unknown_write_key", "no source has this write key")
        api_host, protocol = self._public_api_host(scope)
        document = settings_document(write_key, api_host, protocol)
        await _respond(send, scope, 200, orjson.dumps(document))

    def _public_api_host(self, scope: Scope) -> tuple[str, str]:
        if self.config.public_url:
            scheme, _, rest = self.config.public_url.partition("://")
            return f"{rest.rstrip('/')}/v1", scheme
        headers = _headers(scope)
        host = headers.get(b"host", b"").decode("latin-1") or f"{self.config.host}:{self.config.port}"
        protocol = scope.get("scheme", "http")
        client = scope.get("client")
        if client and self.config.is_trusted_proxy(client[0]):
            host = headers.get(b"x-forwarded-host", host.encode()).decode("latin-1")
            protocol = headers.get(b"x-forwarded-proto", protocol.encode()).decode("latin-1")
        return f"{host}/v1", protocol


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError(400, "client_disconnected", "the client went away before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(400, "request_too_large", _too_large(limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress, refusing to produce more than `limit` bytes (gzip bombs)."""
    decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(400, "invalid_gzip", f"the body is not valid gzip: {exc}") from exc
    if len(data) > limit or decompressor.unconsumed_tail:
        raise RequestError(400, "request_too_large", _too_large(limit) + " once decompressed")
    if not decompressor.eof:
        raise RequestError(400, "invalid_gzip", "the gzip body is truncated")
    return data


def _too_large(limit: int) -> str:
    what = "a single event" if limit == MAX_MESSAGE_BYTES else "a batch request"
    return f"{what} may be at most {limit // 1024} KB"


def _basic_user(authorization: bytes) -> str | None:
    scheme, _, credentials = authorization.partition(b" ")
    if scheme.lower() != b"basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope["headers"]}


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"code": code, "message": message})


def _cors_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    origin = next((value for name, value in scope["headers"] if name.lower() == b"origin"), None)
    if origin:
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
    return [(b"access-control-allow-origin", b"*")]


async def _respond(
    send: Send, scope: Scope, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *_cors_headers(scope),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _preflight(send: Send, scope: Scope) -> None:
    requested = next(
        (value for name, value in scope["headers"] if name.lower() == b"access-control-request-headers"), b""
    )
    allowed = b"Content-Type, Authorization, X-Retry-Count"
    if requested:
        allowed += b", " + requested
    headers = [
        *_cors_headers(scope),
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", allowed),
        (b"access-control-max-age", b"86400"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
