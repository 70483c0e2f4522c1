"""From a request body to the events to store: decode, validate, normalise, serialise.

Pure and free of I/O, so that it runs the same in the serving process and in a parser
process (`parsers.py`). Authentication is the caller's: the body's write key is returned,
and the errors Segment reports only after authentication are returned rather than raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from trackyard.spec import Envelope, InvalidEvent, normalise
from trackyard.store.base import failure_body

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500

_MOBILE_LIBRARIES = (
    "analytics-kotlin",
    "analytics-swift",
    "analytics-ios",
    "analytics-android",
    "analytics-react",
)
_TOO_DEEP = ("nesting_too_deep", "event nests arrays or objects too deeply (at most about 250 levels)")
_TOO_LARGE = ("message_too_large", f"event is larger than {MAX_MESSAGE_BYTES // 1024} KB")


class RequestError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


@dataclass(frozen=True, slots=True)
class RequestShape:
    """What the HTTP layer knows of a request besides its body."""

    batch: bool  # /v1/batch, /v1/import, /v1/b; else a single event
    implied_type: str | None  # the call type of a single-event path
    client: bool  # a browser or mobile endpoint: context.ip is filled from the connection
    received_ms: int
    client_ip: str | None


@dataclass(slots=True)
class Parsed:
    write_key: str | None  # from the body: 'writeKey', or the first batch item's
    events: list[tuple[str, str, bytes]] = field(default_factory=list)  # (messageId, type, stored body)
    failures: list[tuple[str, str, bytes]] = field(default_factory=list)  # (code, reason, event as sent)
    error: RequestError | None = None  # to answer once the write key is known to be valid


def parse_request(body: bytes, shape: RequestShape) -> Parsed:
    """Raise RequestError when the body is not a JSON object (answered before authentication)."""
    payload = _decode(body)
    parsed = Parsed(_body_write_key(payload))
    try:
        if shape.batch:
            items = _batch_items(payload)
            envelope = _envelope(shape, payload, items)
            _build(parsed, items, envelope, None)
        else:
            _build(parsed, [payload], _envelope(shape, None, [payload]), shape.implied_type)
    except RequestError as exc:
        parsed.error = exc
    return parsed


def _build(parsed: Parsed, items: list[Any], envelope: Envelope, implied_type: str | None) -> None:
    events = parsed.events
    failures = parsed.failures
    for item in items:
        try:
            event = normalise(item, envelope, implied_type)
            body = orjson.dumps(event)
        except InvalidEvent as exc:
            failures.append((exc.code, exc.message, failure_body(item)))
            continue
        except orjson.JSONEncodeError:
            # orjson parses 1,024 levels of nesting but serialises only ~254: without this
            # an event nested 255–1,023 levels deep made the whole request a 500.
            failures.append((*_TOO_DEEP, failure_body(item)))
            continue
        if len(body) > MAX_MESSAGE_BYTES and _too_large_as_sent(item):
            failures.append((*_TOO_LARGE, failure_body(item)))
            continue
        events.append((event["messageId"], event["type"], body))


def _too_large_as_sent(item: Any) -> bool:
    """Segment's 32 KB applies to the event as sent (compact JSON). Measured only when the
    stored form is over the limit: an event is refused when both are, so the server's own
    additions never push an event over, and no event costs a second serialisation."""
    return len(orjson.dumps(item)) > MAX_MESSAGE_BYTES


def _envelope(shape: RequestShape, payload: dict[str, Any] | None, items: list[Any]) -> Envelope:
    context = integrations = sent_at = None
    if payload is not None:
        context = _envelope_object(payload, "context")
        integrations = _envelope_object(payload, "integrations")
        sent_at = payload.get("sentAt")
    return Envelope(
        received_ms=shape.received_ms,
        client_ip=shape.client_ip,
        client_endpoint=shape.client,
        channel=_channel(shape.client, items),
        sent_at=sent_at,
        context=context,
        integrations=integrations,
    )


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


def _body_write_key(payload: dict[str, Any]) -> str | None:
    key = payload.get("writeKey")
    if not key:
        batch = payload.get("batch")
        if isinstance(batch, list) and batch and isinstance(batch[0], dict):
            key = batch[0].get("writeKey")
    return key if isinstance(key, str) and key else None


def _channel(client: bool, items: list[Any]) -> str:
    if not client:
        return "server"
    first = items[0] if items and isinstance(items[0], dict) else {}
    context = first.get("context")
    library = context.get("library") if isinstance(context, dict) else None
    name = library.get("name") if isinstance(library, dict) else None
    if isinstance(name, str) and name.startswith(_MOBILE_LIBRARIES):
        return "mobile"
    return "browser"
