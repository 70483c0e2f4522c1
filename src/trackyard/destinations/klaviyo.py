"""Klaviyo: profiles and events through the revisioned JSON:API's bulk jobs.

Wire contract and Segment's mappings: destinations-marketing.md §4 and appendix A.4.

Decisions (the open questions of §4 and appendices B and C):
* Endpoints: the bulk jobs, whose limits the reference documents. identify →
  `POST /api/profile-bulk-import-jobs` (an upsert by email, phone number or external id:
  no create-then-PATCH-on-409 dance), track → `POST /api/event-bulk-create-jobs`. Paths
  carry no trailing slash, as the official SDK sends them. Both jobs take 5 MB per
  request; events 1,000 per job and profiles 10,000, so one batching policy of 1,000
  items serves both. Both are limited to 10 requests/s burst and 150/min steady per
  account: the default rate is the steady 2.5 requests/s (a full batch carries 1,000
  items, so that is 2,500 events/s).
* A job answers 202 once validated; Klaviyo then processes it asynchronously. 202 is
  delivered: what fails later shows in Klaviyo's import errors, not here. A 400 whose
  errors point (`source.pointer` `/data/attributes/<list>/data/<n>/…`) at items gives
  those up and retries the rest, which Klaviyo refused only because of them; other
  4xx give up; 408/423/429 (after `Retry-After`) and 5xx are retried.
* Headers: `Authorization: Klaviyo-API-Key <private key>`, `revision` (a setting; the
  default is 2026-10-15, the revision the official SDK `klaviyo-api` 25 pins; Klaviyo
  supports a revision for two years), JSON:API media type for `Accept` and
  `Content-Type`, as the SDK sends.
* identify → a profile: `external_id` ← userId, `email` ← traits.email,
  `phone_number` ← traits.phone when it reads as E.164 once spaces, dots, dashes and
  parentheses are removed (otherwise the phone stays a custom property: Klaviyo refuses
  a whole job for one malformed number), `first_name`/`last_name` ← firstName/lastName
  (or snake_case), `organization` ← company.name (or a company string), `title`,
  `image` ← avatar, `location` ← address (street → address1, state → region,
  postalCode/postal_code → zip); every other trait is a custom property (Segment's
  default sends none: identify has no `properties`). Profile imports take no anonymous
  id, so an identify with neither userId, email nor phone is skipped. The optional list
  setting adds every imported profile to that list; that is list membership, not email
  consent (classic Segment's subscribe with `confirmOptin` is not done: consent belongs to
  Klaviyo's subscription jobs and the user's own forms).
* track → an event of metric `event`, `properties` ← properties, `time` ← timestamp
  truncated to the second, `unique_id` ← messageId (Klaviyo deduplicates per profile
  and metric on it, so retries and client resends do not double count), `value` ←
  properties.revenue, else properties.value (numbers only) with `value_currency` ←
  currency, as classic Segment's `$value`. The event's profile: `external_id` ← userId,
  `anonymous_id` ← anonymousId, `email` ← context.traits.email (else properties.email),
  `phone_number` ← context.traits.phone as E.164 (Segment leaves both unmapped; they let Klaviyo merge the profile with the one identify made).
* `Order Completed` → the `Order Completed` event plus one `Ordered Product` event per
  product (Segment's Actions behaviour; metric names stay Segment's, not classic
  Klaviyo's `Placed Order`): properties are the order's without `products` plus the
  product's, value ← price × quantity (quantity 1 when missing), `unique_id` ←
  `<messageId>:<index>`, stable across retries unlike Segment's random one.
* Event time must lie between 2000-01-01 and one year ahead: an event outside is skipped
  with a reason rather than failing its whole job. Appendix C.6 (300 or 400 properties
  per event): the current revision's limit is 400; an event with more is skipped.
* page, screen, group and alias are not taken: Segment's Klaviyo (Actions) has no
  presets for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from trackyard.destinations.base import (
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
    classify_status,
    retry_after_seconds,
    setting,
)
from trackyard.spec.timestamps import parse_ms

HOST = "https://a.klaviyo.com"
DEFAULT_REVISION = "2026-10-15"
PROFILES, EVENTS = "profiles", "events"
PATHS = {PROFILES: "/api/profile-bulk-import-jobs", EVENTS: "/api/event-bulk-create-jobs"}
MEDIA_TYPE = "application/vnd.api+json"
MAX_ITEMS = 1000
MAX_REQUEST_BYTES = 5_000_000
MAX_PROFILE_BYTES = 100_000
MAX_EVENT_PROPERTIES = 400
# The envelope around the items of the longer of the two job documents, with room to spare.
_ENVELOPE_BYTES = 256
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)

_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")
_ITEM_POINTER = re.compile(r"^/data/attributes/[^/]+/data/(\d+)(?:/|$)")

# Traits that fill standard profile attributes (phone only when it is valid E.164).
STANDARD_TRAITS = frozenset(
    {
        "email",
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "title",
        "avatar",
        "address",
    }
)
LOCATION_FIELDS = {
    "address1": ("street", "address1", "line1"),
    "address2": ("address2", "line2"),
    "city": ("city",),
    "region": ("state", "region"),
    "zip": ("postalCode", "postal_code", "zip"),
    "country": ("country",),
}


@dataclass(frozen=True, kw_only=True)
class KlaviyoSettings(HTTPSettings):
    api_key: str = setting(
        label="Private API key",
        secret=True,
        help="Settings → Account → API keys; needs the profiles:write, events:write and lists:write scopes.",
    )
    revision: str = setting(
        label="API revision",
        default=DEFAULT_REVISION,
        help="The `revision` header (YYYY-MM-DD); Klaviyo supports each revision for two years.",
    )
    list_id: str | None = setting(
        label="List ID",
        default=None,
        help="Profiles from identify calls are also added to this list (optional).",
    )

    def __post_init__(self) -> None:
        if not _REVISION.match(self.revision):
            raise SettingsError(
                f"klaviyo: setting 'revision' must be a date such as {DEFAULT_REVISION}; got {self.revision!r}"
            )


class Klaviyo(Destination[KlaviyoSettings]):
    slug = "klaviyo"
    name = "Klaviyo"
    category = Category.EMAIL
    description = "Email and SMS marketing: profiles and events in Klaviyo."
    Settings = KlaviyoSettings
    batching = Batching(max_events=MAX_ITEMS, max_bytes=MAX_REQUEST_BYTES - _ENVELOPE_BYTES, max_wait=1.0)
    default_rate_limit = 2.5
    dedupe_field = "unique_id"

    def identify(self, event: Event, settings: KlaviyoSettings) -> Payload:
        traits = _mapping(event.get("traits"))
        attributes = {**_profile_attributes(traits), **_custom_properties(traits)}
        if event.get("userId"):
            attributes["external_id"] = str(event["userId"])
        if not any(attributes.get(key) for key in ("email", "phone_number", "external_id")):
            raise Skip(
                "Klaviyo imports profiles by userId, traits.email or traits.phone; this identify has none"
            )
        profile = {"type": "profile", "attributes": attributes}
        size = len(orjson.dumps(profile))
        if size > MAX_PROFILE_BYTES:
            raise Skip(f"the profile is {size} bytes; Klaviyo takes at most {MAX_PROFILE_BYTES} per profile")
        return Payload(PROFILES, profile)

    def track(self, event: Event, settings: KlaviyoSettings) -> list[Payload]:
        name = event.get("event")
        if not name:
            raise Skip("track has no event name")
        properties = _mapping(event.get("properties"))
        if len(properties) > MAX_EVENT_PROPERTIES:
            raise Skip(
                f"the event has {len(properties)} properties; Klaviyo takes at most {MAX_EVENT_PROPERTIES}"
            )
        profile = _event_profile(event)
        time = _event_time(event)
        message_id = str(event.get("messageId") or "")
        payloads = [_event(profile, str(name), properties, time, message_id, _value(properties))]
        if name == "Order Completed":
            payloads.extend(_ordered_products(profile, properties, time, message_id))
        return payloads

    def page(self, event: Event, settings: KlaviyoSettings) -> Payload:
        raise Skip("Klaviyo takes no page calls (Segment's Klaviyo destination has no page mapping)")

    def screen(self, event: Event, settings: KlaviyoSettings) -> Payload:
        raise Skip("Klaviyo takes no screen calls (Segment's Klaviyo destination has no screen mapping)")

    def group(self, event: Event, settings: KlaviyoSettings) -> Payload:
        raise Skip("Klaviyo has no accounts or groups; Segment's Klaviyo destination takes no group calls")

    def alias(self, event: Event, settings: KlaviyoSettings) -> Payload:
        raise Skip(
            "Klaviyo merges profiles by identifier itself; Segment's Klaviyo destination takes no alias"
        )

    def request(self, endpoint: str, bodies: list[Any], settings: KlaviyoSettings) -> Request:
        url = base_url(settings, HOST) + PATHS[endpoint]
        document = _profiles_job(bodies, settings) if endpoint == PROFILES else _events_job(bodies)
        headers = (
            ("Content-Type", MEDIA_TYPE),
            ("Accept", MEDIA_TYPE),
            ("Authorization", f"Klaviyo-API-Key {settings.api_key.strip()}"),
            ("revision", settings.revision),
        )
        return Request("POST", url, headers, orjson.dumps(document))

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        status = response.status
        if 200 <= status < 300:
            job = _job_id(response)
            return Outcome.delivered(f"HTTP {status}: job {job} queued" if job else f"HTTP {status}")
        if status == 429:
            return Outcome.retry(f"HTTP 429: {response.text[:200]}", retry_after_seconds(response.headers))
        rejected = rejected_items(response, count) if status == 400 else {}
        if not rejected:
            return classify_status(response)
        return [
            Outcome.give_up(f"HTTP 400: Klaviyo rejected this item: {rejected[index]}")
            if index in rejected
            else Outcome.retry("HTTP 400: refused with the job because of other items")
            for index in range(count)
        ]


def _profile_attributes(traits: Mapping[str, Any]) -> dict[str, Any]:
    company = traits.get("company")
    organization = company.get("name") if isinstance(company, Mapping) else company
    attributes = {
        "email": traits.get("email"),
        "phone_number": e164(traits.get("phone")),
        "first_name": traits.get("firstName") or traits.get("first_name"),
        "last_name": traits.get("lastName") or traits.get("last_name"),
        "organization": organization,
        "title": traits.get("title"),
        "image": traits.get("avatar"),
        "location": _location(_mapping(traits.get("address"))) or None,
    }
    return {key: value for key, value in attributes.items() if value is not None}


def _custom_properties(traits: Mapping[str, Any]) -> dict[str, Any]:
    """The traits no standard attribute took; `{}` becomes no `properties` key at all."""
    taken = set(STANDARD_TRAITS)
    if e164(traits.get("phone")):
        taken.add("phone")
    if isinstance(traits.get("company"), str) or "name" in _mapping(traits.get("company")):
        taken.add("company")
    custom = {key: value for key, value in traits.items() if key not in taken}
    return {"properties": custom} if custom else {}


def _location(address: Mapping[str, Any]) -> dict[str, Any]:
    location = {}
    for field, keys in LOCATION_FIELDS.items():
        value = next((address[key] for key in keys if address.get(key) not in (None, "")), None)
        if value is not None:
            location[field] = str(value)
    return location


def e164(phone: Any) -> str | None:
    """The phone in E.164 once formatting is removed (`+1 (555) 010-9999` → `+15550109999`)."""
    if not isinstance(phone, str):
        return None
    compact = _PHONE_PUNCTUATION.sub("", phone)
    return compact if _E164.match(compact) else None


def _event_profile(event: Event) -> dict[str, Any]:
    context_traits = _mapping(_mapping(event.get("context")).get("traits"))
    attributes = {
        "external_id": event.get("userId"),
        "anonymous_id": event.get("anonymousId"),
        "email": context_traits.get("email") or _mapping(event.get("properties")).get("email"),
        "phone_number": e164(context_traits.get("phone")),
    }
    attributes = {key: str(value) for key, value in attributes.items() if value}
    if not attributes:
        raise Skip("Klaviyo needs a userId, anonymousId, email or phone for the event's profile")
    return {"data": {"type": "profile", "attributes": attributes}}


def _event_time(event: Event) -> str:
    ms = parse_ms(event.get("timestamp"))
    if ms is None:
        raise Skip("the event has no valid timestamp")
    moment = datetime.fromtimestamp(ms // 1000, UTC)
    if not EARLIEST_EVENT <= moment <= datetime.now(UTC) + timedelta(days=365):
        raise Skip(f"Klaviyo takes events dated 2000 to one year ahead; this one is {moment.isoformat()}")
    return moment.isoformat()


def _value(properties: Mapping[str, Any]) -> tuple[float, str | None] | None:
    """Segment's `$value`: the revenue, else the value, with its currency."""
    for key in ("revenue", "value"):
        amount = properties.get(key)
        if isinstance(amount, int | float) and not isinstance(amount, bool):
            currency = properties.get("currency")
            return amount, str(currency) if currency else None
    return None


def _event(
    profile: dict[str, Any],
    name: str,
    properties: Mapping[str, Any],
    time: str,
    unique_id: str,
    value: tuple[float, str | None] | None,
) -> Payload:
    attributes: dict[str, Any] = {
        "properties": dict(properties),
        "time": time,
        "metric": {"data": {"type": "metric", "attributes": {"name": name}}},
    }
    if value is not None:
        attributes["value"] = value[0]
        if value[1]:
            attributes["value_currency"] = value[1]
    if unique_id:
        attributes["unique_id"] = unique_id
    return Payload(
        EVENTS,
        {
            "type": "event-bulk-create",
            "attributes": {
                "profile": profile,
                "events": {"data": [{"type": "event", "attributes": attributes}]},
            },
        },
    )


def _ordered_products(
    profile: dict[str, Any], order: Mapping[str, Any], time: str, message_id: str
) -> list[Payload]:
    products = order.get("products")
    shared = {key: value for key, value in order.items() if key != "products"}
    payloads = []
    for index, product in enumerate(products if isinstance(products, list) else []):
        if not isinstance(product, Mapping):
            continue
        properties = {**shared, **product}
        unique_id = f"{message_id}:{index}" if message_id else ""
        payloads.append(
            _event(profile, "Ordered Product", properties, time, unique_id, _line_value(product, order))
        )
    return payloads


def _line_value(product: Mapping[str, Any], order: Mapping[str, Any]) -> tuple[float, str | None] | None:
    price, quantity = product.get("price"), product.get("quantity", 1)
    if isinstance(price, bool) or not isinstance(price, int | float):
        return None
    if isinstance(quantity, bool) or not isinstance(quantity, int | float):
        quantity = 1
    currency = product.get("currency") or order.get("currency")
    return round(price * quantity, 2), str(currency) if currency else None


def _profiles_job(bodies: list[Any], settings: KlaviyoSettings) -> dict[str, Any]:
    job: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": bodies}},
    }
    if settings.list_id:
        job["relationships"] = {"lists": {"data": [{"type": "list", "id": settings.list_id}]}}
    return {"data": job}


def _events_job(bodies: list[Any]) -> dict[str, Any]:
    return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": bodies}}}}


def _job_id(response: Response) -> str:
    body = response.json()
    data = body.get("data") if isinstance(body, dict) else None
    return str(data.get("id", "")) if isinstance(data, dict) else ""


def rejected_items(response: Response, count: int) -> dict[int, str]:
    """Index → Klaviyo's words, for each item a 400's `errors[].source.pointer` names."""
    body = response.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    rejected: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, Mapping):
            continue
        match = _ITEM_POINTER.match(str(_mapping(error.get("source")).get("pointer", "")))
        if match and int(match.group(1)) < count:
            words = error.get("detail") or error.get("title") or error.get("code") or "invalid"
            rejected.setdefault(int(match.group(1)), str(words))
    return rejected


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = Klaviyo()
