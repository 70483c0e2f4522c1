"""Heap: server-side events and user properties through Heap's public server-side API.

Wire contract and Segment's mappings: destinations-analytics.md §5 and Heap's reference
(track, bulk track, add user properties, bulk add user properties).

Decisions (the open questions of §5):
* Endpoints: bulk track `POST {host}/api/track` `{"app_id", "events": [...]}` and bulk
  add user properties `POST {host}/api/add_user_properties` `{"app_id", "users": [...]}`,
  at most 1,000 events or users a request. The app_id in the body is the only credential.
  Segment's own action posts to the partner endpoint `/api/integrations/track`, whose
  `user_identifier.anonymous_id` is for Heap partners only; the public API knows only
  an identity.
* identity = userId, else anonymousId while the "anonymous users" setting is on (the
  default). Heap then counts an anonymous visitor as a user named by its anonymousId,
  which server-side it cannot merge with the identity that user gets later; with the
  setting off such events are skipped, as Segment's classic Heap destination rejects
  them. An identity over Heap's 255 characters is skipped.
* track → the event name; page → "Page viewed" and screen → "Screen viewed" (Segment's
  Heap action), with the page or screen name as property `name`; identify → the traits
  as user properties (skipped without traits), plus the anonymousId as `anonymous_id`
  so Heap users can be joined with their anonymous history. group and alias are not
  taken: Heap's server-side API has neither.
* Properties: Heap takes numbers and strings under 1,024 characters. Nested objects and
  arrays are flattened with dotted keys (`products.0.name`) as Segment's Heap action
  does; booleans become "true"/"false"; nulls are dropped; a longer string is cut to
  1,023 characters (one over-long value would otherwise fail a batch of 1,000). Numbers
  stay numbers (Segment's action stringifies them; Heap accepts numbers and sums them).
  User property keys Heap reserves (`id` in any casing, `user_id`) are dropped.
* `idempotency_key` = messageId; `timestamp` = the event's ISO-8601 timestamp.
* Rate: Heap allows 15,000 events a minute per app_id (and 1,000 per identity). At 1,000
  events a request that is 0.25 requests/s, and a max_wait of 4 s fills a request at
  exactly that pace (250 events/s).
* Responses: 200 delivered; 400 gives the whole request up (Heap does not say which
  event was invalid); 429 and 5xx are retried, honouring Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

HOSTS = {"us": "https://heapanalytics.com", "eu": "https://c.eu.heap-api.com"}
# endpoint → (path, the key of the bulk body's list)
ENDPOINTS = {"track": ("/api/track", "events"), "add_user_properties": ("/api/add_user_properties", "users")}
MAX_VALUE_CHARS = 1023
MAX_EVENT_NAME_CHARS = 1024
MAX_IDENTITY_CHARS = 255
RESERVED_USER_PROPERTIES = frozenset({"id", "user_id"})
EVENT_NAMES = {"page": "Page viewed", "screen": "Screen viewed"}

Flat = dict[str, str | int | float]


@dataclass(frozen=True, kw_only=True)
class HeapSettings(HTTPSettings):
    app_id: str = setting(
        label="App ID",
        secret=True,
        help="The environment ID of your Heap project (Account → Manage → Projects).",
    )
    region: str = setting(
        label="Data center",
        default="us",
        choices=tuple(HOSTS),
        help="us: heapanalytics.com; eu: c.eu.heap-api.com, for Heap projects hosted in the EU.",
    )
    anonymous_users: bool = setting(
        label="Send anonymous users",
        default=True,
        help="Events without a userId use the anonymousId as Heap identity; off: they are skipped.",
    )


class Heap(Destination[HeapSettings]):
    slug = "heap"
    name = "Heap"
    category = Category.ANALYTICS
    description = "Product analytics: server-side events and user properties in Heap."
    Settings = HeapSettings
    batching = Batching(max_events=1000, max_bytes=1_000_000, max_wait=4.0)
    default_rate_limit = 0.25
    dedupe_field = "idempotency_key"

    def track(self, event: Event, settings: HeapSettings) -> Payload:
        return self._event(event, settings, event["event"], flatten(event.get("properties") or {}))

    def page(self, event: Event, settings: HeapSettings) -> Payload:
        properties = flatten(event.get("properties") or {})
        if event.get("name"):
            properties["name"] = event["name"]
        return self._event(event, settings, EVENT_NAMES[event["type"]], properties)

    screen = page

    def identify(self, event: Event, settings: HeapSettings) -> Payload:
        identity = self._identity(event, settings)
        properties = {
            key: value
            for key, value in flatten(event.get("traits") or {}).items()
            if key.lower() not in RESERVED_USER_PROPERTIES
        }
        if not properties:
            raise Skip("identify has no traits to add as Heap user properties")
        if event.get("userId") and event.get("anonymousId"):
            properties["anonymous_id"] = event["anonymousId"]
        return Payload("add_user_properties", {"identity": identity, "properties": properties})

    def _event(self, event: Event, settings: HeapSettings, name: str, properties: Flat) -> Payload:
        body = {
            "identity": self._identity(event, settings),
            "event": name[:MAX_EVENT_NAME_CHARS],
            "timestamp": event["timestamp"],
            "idempotency_key": event["messageId"],
            "properties": properties,
        }
        return Payload("track", body)

    def _identity(self, event: Event, settings: HeapSettings) -> str:
        identity = event.get("userId")
        if not identity and settings.anonymous_users:
            identity = event.get("anonymousId")
        if not identity:
            why = "anonymous users are off" if event.get("anonymousId") else "nor anonymousId"
            raise Skip(f"Heap needs an identity: the event has no userId ({why})")
        if len(identity) > MAX_IDENTITY_CHARS:
            raise Skip(f"identity is {len(identity)} characters; Heap takes at most {MAX_IDENTITY_CHARS}")
        return identity

    def request(self, endpoint: str, bodies: list[Any], settings: HeapSettings) -> Request:
        path, key = ENDPOINTS[endpoint]
        url = base_url(settings, HOSTS[settings.region]) + path
        return Request.json(url, {"app_id": settings.app_id.strip(), key: bodies})


def flatten(value: dict[str, Any] | list[Any], prefix: str = "") -> Flat:
    """Heap property values: numbers and short strings under dotted keys (`products.0.sku`)."""
    flat: Flat = {}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict | list):
            flat.update(flatten(item, name))
        elif isinstance(item, bool):
            flat[name] = "true" if item else "false"
        elif isinstance(item, int | float):
            flat[name] = item
        elif isinstance(item, str):
            flat[name] = item[:MAX_VALUE_CHARS]
    return flat


destination = Heap()
