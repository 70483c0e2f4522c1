"""Segment Connections: forward every event to another Segment-compatible collector.

The receiver is anything that speaks Segment's HTTP Tracking API: Segment itself,
RudderStack, Jitsu, or another trackyard (destinations-analytics.md §6,
segment-contract.md §1). Segment's catalog calls its forwarder "Segment Connections"
(`actions-segment`), the key to write in the `integrations` object.

Decisions (the open questions of §6):
* Each event is re-posted as it was stored, to `POST {host}/v1/batch` with the
  receiver's write key as Basic auth (`base64("<writeKey>:")`), in a
  `{"batch": [...]}` envelope. messageId, userId/anonymousId, context (ip included),
  integrations, properties/traits and `channel` travel unchanged, so the receiver
  dedupes a retried request and keeps the event's origin.
* Time: `timestamp` is the stored, already skew-corrected `timestamp`, and no `sentAt`
  is sent; `receivedAt`, `sentAt` and `originalTimestamp` are left out for the receiver
  to set. Without `sentAt` a receiver takes `timestamp` as given, so it stores the very
  time we stored. Forwarding `originalTimestamp` with the original `sentAt` instead
  would make the receiver compute `its receivedAt − (sentAt − originalTimestamp)`:
  every event shifted by the forwarding delay, hours for a retried batch. The price is
  that the receiver's `originalTimestamp` is our corrected time, not the client's raw clock.
* Limits of the receiver (32 KB an event, 500 KB a request, 2,500 events a batch): an
  event over 32 KB is skipped (Segment would refuse it, and a 400 fails its whole
  batch); requests are cut at 2,500 events or 475,000 bytes, analytics-python's margin
  under 500 KB for the envelope and for receivers that count KB as 1,000 bytes.
* Rate: Segment asks for at most 1,000 requests/s per workspace.
* Responses: a collector answers 200 for everything it can parse, even events it then
  drops; 400 (bad JSON, too large) and 401/403/404 (unknown write key, on trackyard and
  RudderStack) give up; 429 (with Retry-After / X-RateLimit-Reset) and 5xx are retried.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from trackyard.destinations.base import (
    Batching,
    Category,
    Destination,
    Event,
    HTTPSettings,
    Payload,
    Request,
    Skip,
    base_url,
    setting,
)

HOSTS = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
MAX_EVENT_BYTES = 32 * 1024
# Set by the receiver on arrival; forwarding them would skew or mislabel its timestamps.
RECEIVER_FIELDS = frozenset({"receivedAt", "sentAt", "originalTimestamp", "writeKey"})


@dataclass(frozen=True, kw_only=True)
class SegmentSettings(HTTPSettings):
    write_key: str = setting(
        label="Write key",
        secret=True,
        help="The write key of the receiving source (Segment, RudderStack or another trackyard).",
    )
    region: str = setting(
        label="Region",
        default="us",
        choices=tuple(HOSTS),
        help="Segment's US (api.segment.io) or EU (events.eu1.segmentapis.com) endpoint; "
        "for any other collector set the Base URL.",
    )


class SegmentForwarder(Destination[SegmentSettings]):
    slug = "segment"
    name = "Segment Connections"
    aliases = ("Segment",)
    category = Category.CUSTOM
    description = "Forward every event to Segment, RudderStack or another trackyard over the Tracking API."
    Settings = SegmentSettings
    batching = Batching(max_events=2500, max_bytes=475_000, max_wait=0.5)
    default_rate_limit = 1000.0
    dedupe_field = "messageId"

    def _forward(self, event: Event, settings: SegmentSettings) -> Payload:
        message = {key: value for key, value in event.items() if key not in RECEIVER_FIELDS}
        size = len(orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS))
        if size > MAX_EVENT_BYTES:
            raise Skip(f"event is {size} bytes; the Tracking API takes at most {MAX_EVENT_BYTES}")
        return Payload("batch", message)

    track = identify = page = screen = group = alias = _forward

    def request(self, endpoint: str, bodies: list[Any], settings: SegmentSettings) -> Request:
        url = base_url(settings, HOSTS[settings.region]) + "/v1/batch"
        return Request.json(url, {"batch": bodies}, {"Authorization": basic_auth(settings.write_key)})


def basic_auth(write_key: str) -> str:
    """The write key as the Basic user name with an empty password, as Segment documents it."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


destination = SegmentForwarder()
