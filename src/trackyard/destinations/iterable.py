"""Iterable: users, custom events and purchases through Iterable's bulk and commerce APIs.

Wire contract and Segment's mappings: destinations-marketing.md §3 and appendix A.3.

Decisions (the open questions of §3 and appendices B and C):
* Endpoints: identify → `POST /api/users/bulkUpdate` `{"users": [...]}`; track, page and
  screen → `POST /api/events/trackBulk` `{"events": [...]}`; `Order Completed` →
  `POST /api/commerce/trackPurchase`, which takes one purchase per request. The engine
  batches by endpoint name, so each purchase is given an endpoint name of its own
  (`purchase:<messageId>`): a purchase always travels alone. `Api-Key` header; the US
  (`api.iterable.com`) or EU (`api.eu.iterable.com`) data centre, or `base_url`.
* Limits: bulk requests hold at most 1,000 items and 4 MB. Rate limits per project:
  `/users/bulkUpdate` 5 requests/s, `/events/trackBulk` 10/s; the engine has one rate
  per destination, so the default is the lower, 5 requests/s (up to 5,000 users or
  events per second in full batches).
* Identifiers: Iterable keys users by `email` or `userId`; both are sent when known
  (email ← traits.email on identify, properties.email else context.traits.email on
  other calls; userId ← userId). The `identifier` setting matches the project type:
  `email_or_user_id` (hybrid projects, Segment's behaviour) needs either; `email`
  (email-based projects) skips events without an email; `user_id` (userID-based
  projects) skips events without a userId and sets `preferUserId` on user updates so
  Iterable creates the user by userId. Skips carry the reason.
* identify → user `{email, userId, dataFields ← traits + phoneNumber ← traits.phone,
  mergeNestedObjects: false}`. `/users/updateEmail` (Segment's `newEmail` field) is not
  used: no Segment call names an old and a new email.
* track → event `{email, userId, eventName, id ← messageId, createdAt ← timestamp in
  unix seconds, dataFields ← properties, campaignId, templateId}` (the two ids only
  when properties carry them as integers). Iterable upserts events by `id`, so retries
  and resends do not double count; a messageId over 512 characters is replaced by its
  uuid5.
* `Order Completed` → purchase `{id ← order_id (else the event id), user{email, userId,
  dataFields ← context.traits + phoneNumber, mergeNestedObjects: false}, items,
  total ← total (else revenue, else the items' sum), createdAt, dataFields ← properties
  but products, campaignId, templateId}`. Items: `id` ← product_id (else sku), sku,
  name, price, quantity (1 when missing), categories ← [category], url, imageUrl ←
  image_url; every other product field goes to the item's dataFields. Iterable requires
  id, name and price per item: products without them are left out, and an order
  without any is skipped. `Cart Updated` is not mapped to `/commerce/updateCart`
  (Segment's e-commerce spec has no full-cart event): it stays a custom event.
* page → custom event `<name> page`, screen → `<name> screen` (classic Segment),
  `Loaded a Page` / `Loaded a Screen` when unnamed. group and alias are not taken
  (classic Segment supports neither; alias's previousId is no email for updateEmail).
* Dates: every date-time string inside dataFields (nested objects and arrays too)
  becomes `YYYY-MM-DD HH:mm:ss +00:00` in UTC, as Segment converts them; date-only
  strings stay as they are.
* Responses: a bulk 2xx with `failCount` names the failed items in `failedUpdates`
  (invalid, not found, forgotten, conflicting or invalid-data emails and userIds) and
  `disallowedEventNames`: those give up, the others are delivered. A 400 naming items
  gives those up and retries the others; other 4xx (400 BadParams, 401 BadApiKey) give
  up; 408/423/429 (after `Retry-After` when sent) and 5xx are retried.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from trackyard.destinations.base import (
    RETRYABLE_STATUSES,
    Batching,
    Category,
    Destination,
    Event,
    HTTPSettings,
    Outcome,
    Payload,
    Request,
    Response,
    Skip,
    base_url,
    classify_status,
    retry_after_seconds,
    setting,
)
from trackyard.spec.timestamps import parse_ms

REGION_HOSTS = {"us": "https://api.iterable.com/api", "eu": "https://api.eu.iterable.com/api"}
USERS, EVENTS, PURCHASE = "users", "events", "purchase"
BULK_PATHS = {USERS: "/users/bulkUpdate", EVENTS: "/events/trackBulk"}
PURCHASE_PATH = "/commerce/trackPurchase"
MAX_ITEMS = 1000
MAX_REQUEST_BYTES = 4_000_000
# The batching policy counts each body plus a separator; the `{"events":[]}` envelope adds the rest.
_ENVELOPE_BYTES = len(b'{"events":[]}')
MAX_EVENT_ID = 512
IDENTIFIERS = ("email_or_user_id", "email", "user_id")
ID_NAMESPACE = uuid.UUID("5f0c3a52-8d55-4b1e-9a7e-6c1e1f3a2b71")

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# The suffix of a failure list's name → the item field it names.
FAILURE_FIELDS = {"Emails": "email", "UserIds": "userId", "EventNames": "eventName"}
ITEM_FIELDS = {"product_id", "sku", "name", "price", "quantity", "category", "url", "image_url"}


@dataclass(frozen=True, kw_only=True)
class IterableSettings(HTTPSettings):
    api_key: str = setting(
        label="API key",
        secret=True,
        help="Integrations → API keys; a server-side key of the project.",
    )
    region: str = setting(
        label="Data centre",
        default="us",
        choices=("us", "eu"),
        help="Where the project lives: us (api.iterable.com) or eu (api.eu.iterable.com).",
    )
    identifier: str = setting(
        label="Project type",
        default="email_or_user_id",
        choices=IDENTIFIERS,
        help="Hybrid projects need an email or a userId; email-based ones an email; userID-based ones a userId.",
    )


class Iterable(Destination[IterableSettings]):
    slug = "iterable"
    name = "Iterable"
    category = Category.MARKETING_AUTOMATION
    description = "Cross-channel marketing: users, custom events and purchases in Iterable."
    Settings = IterableSettings
    batching = Batching(max_events=MAX_ITEMS, max_bytes=MAX_REQUEST_BYTES - _ENVELOPE_BYTES, max_wait=1.0)
    default_rate_limit = 5.0
    dedupe_field = "id"

    def identify(self, event: Event, settings: IterableSettings) -> Payload:
        traits = _mapping(event.get("traits"))
        email = traits.get("email") or _context_traits(event).get("email")
        return Payload(USERS, _user(event, settings, email, traits))

    def track(self, event: Event, settings: IterableSettings) -> Payload:
        name = event.get("event")
        if not name:
            raise Skip("track has no event name")
        if name == "Order Completed":
            return _purchase(event, settings)
        return _custom_event(event, settings, str(name))

    def page(self, event: Event, settings: IterableSettings) -> Payload:
        return _custom_event(event, settings, _viewed_name(event, "page"))

    def screen(self, event: Event, settings: IterableSettings) -> Payload:
        return _custom_event(event, settings, _viewed_name(event, "screen"))

    def group(self, event: Event, settings: IterableSettings) -> Payload:
        raise Skip("Iterable has no groups; Segment's Iterable destination takes no group calls")

    def alias(self, event: Event, settings: IterableSettings) -> Payload:
        raise Skip("Iterable merges users by email or userId; Segment's Iterable destination takes no alias")

    def request(self, endpoint: str, bodies: list[Any], settings: IterableSettings) -> Request:
        root = base_url(settings, REGION_HOSTS[settings.region])
        headers = {"Api-Key": settings.api_key.strip()}
        if endpoint.startswith(f"{PURCHASE}:"):
            # A purchase key holds one event's purchase; more bodies can only be resends of
            # that same messageId, which Iterable would deduplicate by purchase id anyway.
            return Request.json(root + PURCHASE_PATH, bodies[0], headers)
        return Request.json(root + BULK_PATHS[endpoint], {endpoint: bodies}, headers)

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        status = response.status
        body = response.json()
        failed = failed_items(body if isinstance(body, dict) else {}, request, count)
        if 200 <= status < 300 and failed:
            return [
                Outcome.give_up(f"HTTP {status}: Iterable failed this item: {failed[index]}")
                if index in failed
                else Outcome.delivered(f"HTTP {status}")
                for index in range(count)
            ]
        if status in RETRYABLE_STATUSES or status >= 500:
            return Outcome.retry(
                f"HTTP {status}: {response.text[:200]}", retry_after_seconds(response.headers)
            )
        if 400 <= status < 500 and failed:
            return [
                Outcome.give_up(f"HTTP {status}: Iterable rejected this item: {failed[index]}")
                if index in failed
                else Outcome.retry(f"HTTP {status}: refused with the batch because of other items")
                for index in range(count)
            ]
        return classify_status(response)


def _identifiers(event: Event, settings: IterableSettings, email: Any) -> dict[str, Any]:
    user_id = event.get("userId")
    if settings.identifier == "email" and not email:
        raise Skip("this Iterable project keys users by email; the event has no email")
    if settings.identifier == "user_id" and not user_id:
        raise Skip("this Iterable project keys users by userId; the event has no userId")
    if not email and not user_id:
        raise Skip("Iterable needs an email or a userId; the event has neither")
    identifiers: dict[str, Any] = {}
    if email:
        identifiers["email"] = str(email)
    if user_id:
        identifiers["userId"] = str(user_id)
    return identifiers


def _user(event: Event, settings: IterableSettings, email: Any, traits: Mapping[str, Any]) -> dict[str, Any]:
    data_fields = iterable_dates(dict(traits))
    if traits.get("phone"):
        data_fields["phoneNumber"] = traits["phone"]
    user = {**_identifiers(event, settings, email), "dataFields": data_fields, "mergeNestedObjects": False}
    if settings.identifier == "user_id":
        user["preferUserId"] = True
    return user


def _custom_event(event: Event, settings: IterableSettings, name: str) -> Payload:
    properties = _mapping(event.get("properties"))
    body = {
        **_identifiers(event, settings, _event_email(event)),
        "eventName": name,
        "createdAt": _unix_seconds(event),
        "dataFields": iterable_dates(dict(properties)),
        **_campaign(properties),
    }
    if event.get("messageId"):
        body["id"] = event_id(str(event["messageId"]))
    return Payload(EVENTS, body)


def _purchase(event: Event, settings: IterableSettings) -> Payload:
    order = _mapping(event.get("properties"))
    products = order.get("products")
    items = [
        item
        for product in (products if isinstance(products, list) else [])
        if isinstance(product, Mapping) and (item := _item(product))
    ]
    if not items:
        raise Skip("Order Completed has no product with a product_id (or sku), a name and a price")
    user = _user(event, settings, _event_email(event), _context_traits(event))
    message_id = str(event.get("messageId") or "")
    body = {
        "id": str(order.get("order_id") or event_id(message_id)),
        "user": user,
        "items": items,
        "total": _total(order, items),
        "createdAt": _unix_seconds(event),
        "dataFields": iterable_dates({key: value for key, value in order.items() if key != "products"}),
        **_campaign(order),
    }
    return Payload(f"{PURCHASE}:{message_id or body['id']}", body)


def _item(product: Mapping[str, Any]) -> dict[str, Any]:
    item_id = product.get("product_id") or product.get("sku")
    price, name = product.get("price"), product.get("name")
    if not item_id or not name or isinstance(price, bool) or not isinstance(price, int | float):
        return {}
    quantity = product.get("quantity")
    item: dict[str, Any] = {
        "id": str(item_id),
        "name": str(name),
        "price": price,
        "quantity": quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else 1,
    }
    if product.get("sku"):
        item["sku"] = str(product["sku"])
    if product.get("category"):
        item["categories"] = [str(product["category"])]
    if product.get("url"):
        item["url"] = product["url"]
    if product.get("image_url"):
        item["imageUrl"] = product["image_url"]
    item["dataFields"] = iterable_dates({k: v for k, v in product.items() if k not in ITEM_FIELDS})
    return item


def _total(order: Mapping[str, Any], items: list[dict[str, Any]]) -> float:
    for key in ("total", "revenue"):
        amount = order.get(key)
        if isinstance(amount, int | float) and not isinstance(amount, bool):
            return amount
    return round(sum(item["price"] * item["quantity"] for item in items), 2)


def _campaign(properties: Mapping[str, Any]) -> dict[str, int]:
    return {
        key: properties[key]
        for key in ("campaignId", "templateId")
        if isinstance(properties.get(key), int) and not isinstance(properties.get(key), bool)
    }


def _viewed_name(event: Event, kind: str) -> str:
    name = event.get("name") or _mapping(event.get("properties")).get("name")
    return f"{name} {kind}" if name else f"Loaded a {kind.capitalize()}"


def _event_email(event: Event) -> Any:
    return _mapping(event.get("properties")).get("email") or _context_traits(event).get("email")


def _context_traits(event: Event) -> dict[str, Any]:
    return _mapping(_mapping(event.get("context")).get("traits"))


def _unix_seconds(event: Event) -> int:
    ms = parse_ms(event.get("timestamp"))
    if ms is None:
        raise Skip("the event has no valid timestamp")
    return ms // 1000


def event_id(message_id: str) -> str:
    """Iterable's event id: the messageId, or its uuid5 when it is longer than Iterable allows."""
    if len(message_id) <= MAX_EVENT_ID:
        return message_id
    return str(uuid.uuid5(ID_NAMESPACE, message_id))


def iterable_dates(value: Any) -> Any:
    """Every date-time string → `YYYY-MM-DD HH:mm:ss +00:00` (UTC), through objects and arrays."""
    if isinstance(value, dict):
        return {key: iterable_dates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [iterable_dates(item) for item in value]
    if isinstance(value, str) and _DATE_TIME.match(value) and (ms := parse_ms(value)) is not None:
        return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S +00:00")
    return value


def failed_items(body: Mapping[str, Any], request: Request, count: int) -> dict[int, str]:
    """Index → the failure list naming the item's email, userId or event name."""
    reasons = _failure_reasons(body)
    failed: dict[int, str] = {}
    for index, item in enumerate(_request_items(request)[:count]):
        keys = [(field, str(item[field])) for field in FAILURE_FIELDS.values() if item.get(field) is not None]
        reason = next((reasons[key] for key in keys if key in reasons), None)
        if reason:
            failed[index] = reason
    return failed


def _failure_reasons(body: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(field, value) → the name of the list in `failedUpdates` (or the body) that holds it."""
    lists = dict(_mapping(body.get("failedUpdates")))
    for key in ("invalidEmails", "invalidUserIds", "disallowedEventNames"):
        if key not in lists and isinstance(body.get(key), list):
            lists[key] = body[key]
    reasons: dict[tuple[str, str], str] = {}
    for kind, values in lists.items():
        field = next((field for suffix, field in FAILURE_FIELDS.items() if kind.endswith(suffix)), None)
        for value in values if field and isinstance(values, list) else []:
            reasons.setdefault((field, str(value)), kind)
    return reasons


def _request_items(request: Request) -> list[dict[str, Any]]:
    data = orjson.loads(request.body)
    for key in (USERS, EVENTS):
        if isinstance(data, dict) and isinstance(data.get(key), list):
            return [item if isinstance(item, dict) else {} for item in data[key]]
    return []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = Iterable()
