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
from trackyard.ingest.committer import GroupCommitter
from trackyard.ingest.settings_doc import settings_document
from trackyard.ingest.sources import SourceDirectory
from trackyard.spec import Envelope, InvalidEvent, normalise, now_ms
from trackyard.store import FailureRecord, LogRecord, StoreUnavailable

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
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
_MOBILE_LIBRARIES = (
    "analytics-kotlin",
    "analytics-swift",
    "analytics-ios",
    "analytics-android",
    "analytics-react",
)
_SUCCESS = b'{"success":true}'


class RequestError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


class CollectionAPI:
    """ASGI app serving /v1/*; other paths go to `fallback`."""

    def __init__(
        self,
        config: Config,
        sources: SourceDirectory,
        committer: GroupCommitter,
        fallback: ASGIApp | None = None,
    ) -> None:
        self.config = config
        self.sources = sources
        self.committer = committer
        self.fallback = fallback

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
        payload = _decode(body)
        source = await self._authenticate(headers, payload)
        received_ms = now_ms()
        if route.kind == "batch":
            items = _batch_items(payload)
            envelope = self._envelope(scope, headers, route, received_ms, payload, items)
            records, failures = _build(items, envelope, source.id, None)
        else:
            envelope = self._envelope(scope, headers, route, received_ms, None, [payload])
            records, failures = _build([payload], envelope, source.id, route.implied_type)
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

    async def _authenticate(self, headers: dict[bytes, bytes], payload: dict[str, Any]) -> Any:
        write_key = _basic_user(headers.get(b"authorization", b"")) or _body_write_key(payload)
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

    def _envelope(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        route: Route,
        received_ms: int,
        payload: dict[str, Any] | None,
        items: list[Any],
    ) -> Envelope:
        context = integrations = sent_at = None
        if payload is not None:
            context = _envelope_object(payload, "context")
            integrations = _envelope_object(payload, "integrations")
            sent_at = payload.get("sentAt")
        return Envelope(
            received_ms=received_ms,
            client_ip=self._client_ip(scope, headers),
            client_endpoint=route.client,
            channel=_channel(route, items),
            sent_at=sent_at,
            context=context,
            integrations=integrations,
        )

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


def _build(
    items: list[Any], envelope: Envelope, source_id: int, implied_type: str | None
) -> tuple[list[LogRecord], list[FailureRecord]]:
    records: list[LogRecord] = []
    failures: list[FailureRecord] = []
    received_ms = envelope.received_ms
    for item in items:
        try:
            event = normalise(item, envelope, implied_type)
            body = orjson.dumps(event)
        except InvalidEvent as exc:
            failures.append(FailureRecord.of(source_id, received_ms, exc.code, exc.message, item))
            continue
        except orjson.JSONEncodeError:
            # orjson parses 1,024 levels of nesting but serialises only ~254: without this
            # an event nested 255–1,023 levels deep made the whole request a 500.
            failures.append(FailureRecord.of(source_id, received_ms, *_TOO_DEEP, item))
            continue
        if len(body) > MAX_MESSAGE_BYTES and _too_large_as_sent(item):
            failures.append(FailureRecord.of(source_id, received_ms, *_TOO_LARGE, item))
            continue
        records.append(LogRecord(source_id, event["messageId"], received_ms, event["type"], body))
    return records, failures


_TOO_DEEP = ("nesting_too_deep", "event nests arrays or objects too deeply (at most about 250 levels)")
_TOO_LARGE = ("message_too_large", f"event is larger than {MAX_MESSAGE_BYTES // 1024} KB")


def _too_large_as_sent(item: Any) -> bool:
    """Segment's 32 KB applies to the event as sent (compact JSON). Measured only when the
    stored form is over the limit: an event is refused when both are, so the server's own
    additions never push an event over, and no event costs a second serialisation."""
    return len(orjson.dumps(item)) > MAX_MESSAGE_BYTES


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


def _decode(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise RequestError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise RequestError(400, "invalid_json", "the body must be a JSON object")
    return payload


def _batch_items(payload: dict[str, Any]) -> list[Any]:
    items = payload.get("batch")
    if not isinstance(items, list):
        raise RequestError(400, "invalid_batch", "'batch' must be an array of events")
    if len(items) > MAX_BATCH_EVENTS:
        raise RequestError(
            400, "too_many_events", f"a batch may hold at most {MAX_BATCH_EVENTS} events; got {len(items)}"
        )
    return items


def _envelope_object(payload: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, dict):
        raise RequestError(400, f"invalid_{name}", f"the batch '{name}' must be an object")
    return value


def _basic_user(authorization: bytes) -> str | None:
    scheme, _, credentials = authorization.partition(b" ")
    if scheme.lower() != b"basic" or not credentials:
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def _body_write_key(payload: dict[str, Any]) -> str | None:
    key = payload.get("writeKey")
    if not key:
        batch = payload.get("batch")
        if isinstance(batch, list) and batch and isinstance(batch[0], dict):
            key = batch[0].get("writeKey")
    return key if isinstance(key, str) and key else None


def _channel(route: Route, items: list[Any]) -> str:
    if not route.client:
        return "server"
    first = items[0] if items and isinstance(items[0], dict) else {}
    context = first.get("context")
    library = context.get("library") if isinstance(context, dict) else None
    name = library.get("name") if isinstance(library, dict) else None
    if isinstance(name, str) and name.startswith(_MOBILE_LIBRARIES):
        return "mobile"
    return "browser"


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
