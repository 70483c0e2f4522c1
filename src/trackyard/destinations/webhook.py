"""Webhook: every event, or a batch of events, POSTed as JSON to a URL of yours.

Decisions (destinations-analytics.md §7):
* The body is the event exactly as stored (the normalised Segment message), or a JSON
  array of them when `batch_size` > 1.
* `X-Signature` is the hex HMAC-SHA1 of the body with the shared secret, as Segment's
  classic Webhooks destination signs it. For a batch, Segment's Actions webhook signs
  only the first event's JSON; we do the same so receivers written for Segment verify.
* Success is any 2xx; 408/423/429/5xx are retried; other statuses give up.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from trackyard.destinations.base import (
    Batching,
    Category,
    Destination,
    DestinationSettings,
    Event,
    Payload,
    Request,
    setting,
)


@dataclass(frozen=True, kw_only=True)
class WebhookSettings(DestinationSettings):
    url: str = setting(label="Webhook URL", help="Every event is POSTed here as JSON.")
    shared_secret: str | None = setting(
        label="Shared secret", default=None, secret=True, help="Signs each request: X-Signature = HMAC-SHA1."
    )
    headers: dict[str, str] = setting(
        label="Headers", default={}, help="Extra request headers, as JSON or 'Name: value' lines."
    )
    batch_size: int = setting(
        label="Batch size", default=1, help="1 sends one event per request; more sends JSON arrays."
    )


class Webhook(Destination[WebhookSettings]):
    slug = "webhook"
    name = "Webhooks"
    category = Category.CUSTOM
    description = "POST every event as JSON to your own URL, signed with a shared secret."
    Settings = WebhookSettings

    def batching_policy(self, settings: WebhookSettings) -> Batching:
        return Batching(max_events=max(1, settings.batch_size), max_bytes=4_000_000, max_wait=0.5)

    def _event(self, event: Event, settings: WebhookSettings) -> Payload:
        return Payload("post", event)

    track = identify = page = screen = group = alias = _event

    def request(self, endpoint: str, bodies: list[Any], settings: WebhookSettings) -> Request:
        single = settings.batch_size <= 1
        data = bodies[0] if single else bodies
        body = orjson.dumps(data)
        headers = {"User-Agent": "trackyard/1.0 (Segment.io/1.0 compatible)", **settings.headers}
        if settings.shared_secret:
            signed = body if single else orjson.dumps(bodies[0])
            headers["X-Signature"] = hmac.new(
                settings.shared_secret.encode(), signed, hashlib.sha1
            ).hexdigest()
        return Request("POST", settings.url, (("Content-Type", "application/json"), *headers.items()), body)


destination = Webhook()
