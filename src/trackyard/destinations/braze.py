"""Braze: user attributes, custom events and purchases through `POST /users/track`.

Wire contract and Segment's mappings: destinations-marketing.md §2 and appendix A.2.
The mapping follows Segment's Actions defaults ("Braze Cloud Mode (Actions)"), with the
classic destination's group and page behaviour; Segment's quirks are not copied where
they lose data (event time from receivedAt, custom attributes that repeat standard ones).

Decisions (the open questions of §2 and appendix C):
* `POST {instance}/users/track`, `Authorization: Bearer <REST API key>`, the REST host of
  the chosen instance (US-01 … JP-01, Segment's list) or `base_url`;
  `X-Braze-Batch: true` when a request holds more than one object, as Segment sends.
* Each Segment call gives objects of one kind, and each request holds one kind:
  attributes, events or purchases are separate endpoints, batched up to 75 objects each
  (the batch size setting; 50 for "Monthly Active Users CY 24-25" accounts, whose limit
  is 50 objects per request). So a request is within both the legacy "75 per array" and
  the newer "75 combined" limit, and an error's `index` is the index of the payload.
  Like Segment's own batching, attributes, events and purchases travel apart, so Braze
  may process a user's event before the attribute update sent with it.
* Identifier: external_id ← userId. Without a userId, the event goes to an alias-only
  profile, user_alias `{alias_name: anonymousId, alias_label: "anonymous_id"}` (label
  configurable; RudderStack's approach), created because `_update_existing_only` is
  false by default; with anonymous users off, such events are skipped (Segment's
  behaviour). The alias profile is not merged into the user on identify: Braze's
  `/users/identify` keeps only push tokens and message history of an alias identified
  into an existing user, has its own rate limit and 50-alias batches, and races with the
  `/users/track` writes that create the user.
* identify → attributes: email, first_name, last_name, phone, gender (M/F/O/N/P as
  Segment normalises it), dob (YYYY-MM-DD) ← birthday, home_city ← address.city,
  country ← address.country or context.location.country, image_url ← avatar,
  current_location ← context.location; every other trait is a custom attribute
  (`address` stays a nested one: only its city and country have standard fields).
  Traits consumed by standard fields are not repeated as custom attributes.
* track → a custom event `{name, time, properties}`; `Order Completed` → one purchase
  per product (product_id ← product_id or sku, price, quantity (default 1), currency ←
  the product's, else the order's, else USD; properties = the product's other fields
  and the order's properties but products, the order's winning a clash as in Segment),
  and no custom event; products without an id or a price are left out, and an order
  with none is skipped.
* time ← the event's `timestamp` as ISO-8601, not Segment's receivedAt: the time the
  event happened, corrected for clock skew.
* page/screen → custom events `Viewed {category} {name} Page` / `Viewed {name} Screen`
  (Segment classic), only with the "track pages" setting; group → custom attribute
  `ab_segment_group_<groupId>: true` (Segment classic); alias is not taken: merging
  users (`/users/merge`) is destructive and Segment's presets do not do it.
* Responses: 2xx with `errors[]` naming `{input_array, index}` → those objects give up,
  the others are delivered; errors without an index do not fail anything. A 4xx whose
  errors name indexes → those give up and the rest are retried (Braze refused the
  batch because of them); other 4xx (400, 401, 403, 404) give up; 408/423/429/5xx are
  retried, a 429 after `X-Ratelimit-Retry-After` or `Retry-After` seconds, else at
  `X-RateLimit-Reset` (UTC epoch seconds, sent with every Braze response).
* Rate limit: /users/track takes 3,000 requests per 3 s per workspace (1,000/s).
  Braze has no deduplication key: each event object is a new event (dedupe_field empty).
"""

from __future__ import annotations

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
    SettingsError,
    Skip,
    base_url,
    retry_after_seconds,
    setting,
)
from trackyard.spec.timestamps import parse_ms

INSTANCES = {
    **{f"US-0{n}": f"https://rest.iad-0{n}.braze.com" for n in range(1, 9)},
    "US-09": "https://rest.us-09.braze.com",
    "US-10": "https://rest.us-10.braze.com",
    "EU-01": "https://rest.fra-01.braze.eu",
    "EU-02": "https://rest.fra-02.braze.eu",
    "AU-01": "https://rest.au-01.braze.com",
    "ID-01": "https://rest.id-01.braze.com",
    "JP-01": "https://rest.jp-01.braze.com",
}
MAX_OBJECTS = 75  # per array and per request
MAX_REQUEST_BYTES = 4_000_000
ARRAYS = ("attributes", "events", "purchases")

# Braze gender ← Segment's gender values (lower-case), as Segment's Braze destination maps them.
GENDERS = {
    **dict.fromkeys(("man", "male", "m"), "M"),
    **dict.fromkeys(("woman", "female", "w", "f"), "F"),
    **dict.fromkeys(("other", "o"), "O"),
    **dict.fromkeys(("not applicable", "n"), "N"),
    **dict.fromkeys(("prefer not to say", "p"), "P"),
}
# Traits that become standard attributes and are not repeated as custom ones.
STANDARD_TRAITS = frozenset(
    {"email", "firstName", "first_name", "lastName", "last_name", "phone", "gender", "birthday", "avatar"}
)
PURCHASE_FIELDS = frozenset({"product_id", "currency", "price", "quantity"})


@dataclass(frozen=True, kw_only=True)
class BrazeSettings(HTTPSettings):
    api_key: str = setting(
        label="REST API key",
        secret=True,
        help="Settings → APIs and Identifiers → API keys; needs the users.track permission.",
    )
    instance: str = setting(
        label="Instance",
        default="US-01",
        choices=tuple(INSTANCES),
        help="Your Braze instance (the dashboard URL tells it: dashboard-01.braze.com is US-01).",
    )
    app_id: str | None = setting(
        label="App identifier",
        default=None,
        help="Copied into every event and purchase (Settings → APIs and Identifiers); optional.",
    )
    batch_size: int = setting(
        label="Objects per request",
        default=MAX_OBJECTS,
        help="At most 75; 50 for accounts on Monthly Active Users CY 24-25 plans.",
    )
    update_existing_only: bool = setting(
        label="Update existing users only",
        default=False,
        help="On: Braze ignores objects of users it does not know yet instead of creating them.",
    )
    anonymous_users: bool = setting(
        label="Track anonymous users",
        default=True,
        help="Events without a userId go to an alias-only profile named after the anonymousId.",
    )
    anonymous_alias_label: str = setting(
        label="Alias label of anonymous users",
        default="anonymous_id",
        help="The alias_label of those profiles.",
    )
    track_pages: bool = setting(
        label="Track pages and screens",
        default=False,
        help="Send page and screen calls as 'Viewed … Page' / 'Viewed … Screen' custom events.",
    )

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_OBJECTS:
            raise SettingsError(
                f"braze: setting 'batch_size' must be between 1 and {MAX_OBJECTS}; got {self.batch_size}"
            )


class Braze(Destination[BrazeSettings]):
    slug = "braze"
    name = "Braze"
    category = Category.MARKETING_AUTOMATION
    description = "Customer engagement: user attributes, custom events and purchases in Braze."
    Settings = BrazeSettings
    batching = Batching(max_events=MAX_OBJECTS, max_bytes=MAX_REQUEST_BYTES, max_wait=1.0)
    default_rate_limit = 1000.0
    dedupe_field = ""

    def batching_policy(self, settings: BrazeSettings) -> Batching:
        return Batching(max_events=settings.batch_size, max_bytes=MAX_REQUEST_BYTES, max_wait=1.0)

    def identify(self, event: Event, settings: BrazeSettings) -> Payload:
        traits = event.get("traits") or {}
        custom = {key: value for key, value in traits.items() if key not in STANDARD_TRAITS}
        attributes = {**custom, **_standard_attributes(traits, event.get("context") or {})}
        return Payload("attributes", {**attributes, **_user(event, settings)})

    def group(self, event: Event, settings: BrazeSettings) -> Payload:
        return Payload("attributes", {f"ab_segment_group_{event['groupId']}": True, **_user(event, settings)})

    def track(self, event: Event, settings: BrazeSettings) -> Payload | list[Payload]:
        if event.get("event") == "Order Completed":
            return _purchases(event, settings)
        return _custom_event(event, settings, str(event.get("event") or ""))

    def page(self, event: Event, settings: BrazeSettings) -> Payload:
        return self._viewed(event, settings, "Page")

    def screen(self, event: Event, settings: BrazeSettings) -> Payload:
        return self._viewed(event, settings, "Screen")

    def _viewed(self, event: Event, settings: BrazeSettings, kind: str) -> Payload:
        if not settings.track_pages:
            raise Skip(f"{kind.lower()} calls are not sent: the 'track pages and screens' setting is off")
        properties = event.get("properties") or {}
        words = [properties.get("category") if kind == "Page" else None, event.get("name")]
        label = " ".join(str(word) for word in words if word)
        return _custom_event(event, settings, f"Viewed {label} {kind}" if label else f"Loaded a {kind}")

    def request(self, endpoint: str, bodies: list[Any], settings: BrazeSettings) -> Request:
        headers = {"Authorization": f"Bearer {settings.api_key.strip()}"}
        if len(bodies) > 1:
            headers["X-Braze-Batch"] = "true"
        url = f"{base_url(settings, INSTANCES[settings.instance])}/users/track"
        return Request.json(url, {endpoint: bodies}, headers)

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        status = response.status
        body = response.json()
        body = body if isinstance(body, dict) else {}
        rejected = rejected_objects(body, _array_of(request), count)
        if 200 <= status < 300:
            if not rejected:
                return Outcome.delivered(f"HTTP {status}: {body.get('message', '')}".rstrip(": "))
            return [
                Outcome.give_up(f"HTTP {status}: Braze rejected this object: {rejected[index]}")
                if index in rejected
                else Outcome.delivered(f"HTTP {status}")
                for index in range(count)
            ]
        excerpt = f"HTTP {status}: {response.text[:200]}"
        if status in RETRYABLE_STATUSES or status >= 500:
            return Outcome.retry(excerpt, _retry_after(response))
        if not rejected:
            return Outcome.give_up(excerpt)
        return [
            Outcome.give_up(f"HTTP {status}: Braze rejected this object: {rejected[index]}")
            if index in rejected
            else Outcome.retry(f"{excerpt} (refused because of other objects in the batch)")
            for index in range(count)
        ]


def _user(event: Event, settings: BrazeSettings) -> dict[str, Any]:
    """The identifier of the event's user, and whether Braze may create that user."""
    if event.get("userId"):
        identifier: dict[str, Any] = {"external_id": event["userId"]}
    elif settings.anonymous_users and event.get("anonymousId"):
        alias = {"alias_name": event["anonymousId"], "alias_label": settings.anonymous_alias_label}
        identifier = {"user_alias": alias}
    else:
        raise Skip("Braze needs a userId, or an anonymousId with 'track anonymous users' on")
    return {**identifier, "_update_existing_only": settings.update_existing_only}


def _standard_attributes(traits: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    address = traits.get("address") if isinstance(traits.get("address"), Mapping) else {}
    location = context.get("location") if isinstance(context.get("location"), Mapping) else {}
    attributes = {
        "email": traits.get("email"),
        "first_name": traits.get("firstName") or traits.get("first_name"),
        "last_name": traits.get("lastName") or traits.get("last_name"),
        "phone": traits.get("phone"),
        "gender": _gender(traits.get("gender")),
        "dob": _date(traits.get("birthday")),
        "home_city": address.get("city"),
        "country": address.get("country") or location.get("country"),
        "image_url": traits.get("avatar"),
        "current_location": _coordinates(location),
    }
    return {key: value for key, value in attributes.items() if value is not None}


def _gender(value: object) -> object:
    if not isinstance(value, str):
        return value
    return GENDERS.get(value.strip().lower(), value)


def _date(value: object) -> str | None:
    ms = parse_ms(value)
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _coordinates(location: Mapping[str, Any]) -> dict[str, float] | None:
    latitude, longitude = location.get("latitude"), location.get("longitude")
    if isinstance(latitude, int | float) and isinstance(longitude, int | float):
        return {"latitude": latitude, "longitude": longitude}
    return None


def _occurrence(event: Event, settings: BrazeSettings) -> dict[str, Any]:
    """What events and purchases share: the user, the app and the ISO-8601 time."""
    shared = _user(event, settings)
    if settings.app_id:
        shared["app_id"] = settings.app_id
    shared["time"] = event["timestamp"]
    return shared


def _custom_event(event: Event, settings: BrazeSettings, name: str) -> Payload:
    body = {**_occurrence(event, settings), "name": name}
    properties = event.get("properties")
    if properties:
        body["properties"] = properties
    return Payload("events", body)


def _purchases(event: Event, settings: BrazeSettings) -> list[Payload]:
    order = dict(event.get("properties") or {})
    products = order.pop("products", None)
    shared = _occurrence(event, settings)
    purchases = [
        _purchase(product, order, shared)
        for product in (products if isinstance(products, list) else [])
        if isinstance(product, Mapping)
    ]
    payloads = [Payload("purchases", purchase) for purchase in purchases if purchase]
    if not payloads:
        raise Skip("Order Completed has no product with a product_id (or sku) and a price")
    return payloads


def _purchase(product: Mapping[str, Any], order: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    product_id = product.get("product_id") or product.get("sku")
    price = product.get("price")
    if not product_id or isinstance(price, bool) or not isinstance(price, int | float):
        return {}
    quantity = product.get("quantity")
    currency = product.get("currency") or order.get("currency") or "USD"
    return {
        **shared,
        "product_id": str(product_id),
        "currency": str(currency).upper(),
        "price": price,
        "quantity": quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else 1,
        "properties": {
            **{key: value for key, value in product.items() if key not in PURCHASE_FIELDS},
            **order,
        },
    }


def _array_of(request: Request) -> str:
    """The one object array a request of ours carries."""
    data = orjson.loads(request.body)
    return next(key for key in ARRAYS if key in data)


def rejected_objects(body: Mapping[str, Any], array: str, count: int) -> dict[int, str]:
    """Index → reason for every object of `array` that Braze's `errors` name."""
    rejected: dict[int, str] = {}
    errors = body.get("errors")
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, Mapping):
            continue
        index = error.get("index")
        if error.get("input_array", array) != array or not isinstance(index, int) or not 0 <= index < count:
            continue
        rejected.setdefault(index, str(error.get("type") or error))
    return rejected


def _retry_after(response: Response) -> float | None:
    """Seconds to wait: X-Ratelimit-Retry-After or Retry-After, else (on 429) X-RateLimit-Reset."""
    headers = response.headers
    explicit = headers.get("x-ratelimit-retry-after")
    if explicit:
        try:
            return max(0.0, float(explicit))
        except ValueError:
            pass
    if response.status != 429 and not headers.get("retry-after"):
        return None
    return retry_after_seconds(headers)


destination = Braze()
