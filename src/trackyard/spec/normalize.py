"""Validation and server-side normalisation of one Segment message (contract §1.6 and §1.9).

Messages stay plain dicts: Segment passes unknown top-level fields through (`_metadata`,
`category`, `channel`, vendor extensions), and a typed struct would silently drop them.
This module is the one place that knows the Spec's field names and rules.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from trackyard.spec.timestamps import canonical, format_ms

CALL_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
MAX_MESSAGE_ID_LENGTH = 100
_OBJECT_FIELDS = ("properties", "traits", "context", "integrations")
_ID_FIELDS = ("userId", "anonymousId", "previousId", "groupId")


class InvalidEvent(ValueError):
    """A message Segment would accept with 200 and then record as failed on ingest."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Envelope:
    """What one HTTP request contributes to each of its messages."""

    received_ms: int
    client_ip: str | None = None
    client_endpoint: bool = False
    channel: str = "server"
    sent_at: object = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    received_at: str = field(init=False)
    # (timestamp or originalTimestamp, sentAt) as sent → their normalised forms: a batch's
    # events share their sentAt and mostly their timestamps, so each pair is worked out once.
    _times: dict[tuple[object, object], _Times] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "received_at", format_ms(self.received_ms))


def normalise(message: object, envelope: Envelope, implied_type: str | None = None) -> dict[str, Any]:
    """Validate `message` and return it normalised for the log; raise InvalidEvent otherwise.

    `message` itself is left as it was sent (a failure record keeps it so); the result is a
    shallow copy whose changed nested objects are new.
    """
    if not isinstance(message, dict):
        raise InvalidEvent("invalid_event", "each event must be a JSON object")
    call_type = implied_type or message.get("type")
    if call_type.__class__ is not str or call_type not in CALL_TYPES:  # a list or object is unhashable
        raise InvalidEvent(
            "invalid_type", f"'type' must be one of {', '.join(sorted(CALL_TYPES))}; got {call_type!r}"
        )
    event = dict(message)
    event["type"] = call_type
    event.pop("writeKey", None)
    for name in _OBJECT_FIELDS:
        value = event.get(name)
        if value is not None and not isinstance(value, dict):
            raise InvalidEvent(f"invalid_{name}", f"'{name}' must be an object; got {_json_type(value)}")
    _check_identity(event, call_type)
    _merge_envelope(event, envelope)
    _assign_message_id(event)
    _stamp_times(event, envelope)
    _stamp_context(event, envelope)
    return event


def _check_identity(message: dict[str, Any], call_type: str) -> None:
    for name in _ID_FIELDS:
        value = message.get(name)
        if value is not None and value.__class__ is not str:
            message[name] = _id_string(value, name)
    if call_type == "alias":
        if not message.get("userId") or not message.get("previousId"):
            raise InvalidEvent("no_user_previous_id", "alias requires both 'userId' and 'previousId'")
    elif not message.get("userId") and not message.get("anonymousId"):
        raise InvalidEvent("no_user_anon_id", f"{call_type} requires 'userId' or 'anonymousId'")
    if call_type == "track":
        event = message.get("event")
        if event.__class__ is not str or not event.strip():
            raise InvalidEvent("no_event_name", "track requires 'event', a non-empty string")
    elif call_type == "group" and not message.get("groupId"):
        raise InvalidEvent("no_group_id", "group requires 'groupId'")


def _id_string(value: object, name: str) -> str | None:
    """Ids are strings; SDKs stringify numbers, and so does the server."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise InvalidEvent(f"invalid_{_snake(name)}", f"'{name}' must be a string or number; got boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    raise InvalidEvent(
        f"invalid_{_snake(name)}", f"'{name}' must be a string or number; got {_json_type(value)}"
    )


def _merge_envelope(message: dict[str, Any], envelope: Envelope) -> None:
    """Envelope context and integrations apply to every item; the item's own keys win."""
    if envelope.context:
        message["context"] = {**envelope.context, **(message.get("context") or {})}
    if envelope.integrations:
        message["integrations"] = {**envelope.integrations, **(message.get("integrations") or {})}


def _assign_message_id(message: dict[str, Any]) -> None:
    message_id = message.get("messageId")
    if message_id is None or message_id == "":
        message["messageId"] = f"ty-{uuid.uuid4()}"
        return
    if message_id.__class__ is not str:
        message_id = _id_string(message_id, "messageId")
    if len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise InvalidEvent(
            "invalid_message_id", f"'messageId' must be at most {MAX_MESSAGE_ID_LENGTH} characters"
        )
    message["messageId"] = message_id


def _stamp_times(message: dict[str, Any], envelope: Envelope) -> None:
    """receivedAt, originalTimestamp, sentAt and the skew-corrected timestamp (§1.9)."""
    original = message.get("timestamp")
    if original is None:
        original = message.get("originalTimestamp")
    sent = message.get("sentAt")
    if sent is None:
        sent = envelope.sent_at
    times = _client_times(original, sent, envelope)
    # Only now that both parsed: a failed event must keep the `timestamp` its reason names.
    message.pop("timestamp", None)
    message["receivedAt"] = envelope.received_at
    if times.sent_at is not None:
        message["sentAt"] = times.sent_at
    else:
        message.pop("sentAt", None)
    if times.original is None:
        message.pop("originalTimestamp", None)
    else:
        message["originalTimestamp"] = times.original
    message["timestamp"] = times.timestamp


@dataclass(frozen=True, slots=True)
class _Times:
    original: str | None
    sent_at: str | None
    timestamp: str


def _client_times(original: object, sent: object, envelope: Envelope) -> _Times:
    """The normalised times of one message, memoised per request when both are text or absent."""
    if (original is None or original.__class__ is str) and (sent is None or sent.__class__ is str):
        key = (original, sent)
        times = envelope._times.get(key)
        if times is None:
            times = envelope._times[key] = _work_out_times(original, sent, envelope)
        return times
    return _work_out_times(original, sent, envelope)


def _work_out_times(original: object, sent: object, envelope: Envelope) -> _Times:
    """timestamp = receivedAt − (sentAt − originalTimestamp); without sentAt it is the
    client's timestamp, and without any client time it is receivedAt."""
    original_time = _time_field(original, "timestamp")
    sent_time = _time_field(sent, "sentAt")
    sent_text = None if sent_time is None else sent_time[1]
    if original_time is None:
        return _Times(None, sent_text, envelope.received_at)
    if sent_time is None:
        return _Times(original_time[1], None, original_time[1])
    corrected = format_ms(envelope.received_ms - (sent_time[0] - original_time[0]))
    return _Times(original_time[1], sent_text, corrected)


def _time_field(value: object, name: str) -> tuple[int, str] | None:
    """(ms, canonical text) of a client time, None when absent; InvalidEvent when not ISO-8601."""
    if value is None:
        return None
    parsed = canonical(value) if isinstance(value, str) else None
    if parsed is None:
        raise InvalidEvent(
            f"invalid_{_snake(name)}", f"'{name}' must be an ISO-8601 date-time; got {value!r:.60}"
        )
    return parsed


def _stamp_context(message: dict[str, Any], envelope: Envelope) -> None:
    context = message.get("context")
    if context is None:
        context = message["context"] = {}
    if (
        envelope.client_ip
        and "ip" not in context
        and (envelope.client_endpoint or context.get("direct") is True)
    ):
        message["context"] = {**context, "ip": envelope.client_ip}  # the sent context stays as sent
    if "channel" not in message:
        message["channel"] = envelope.channel


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
