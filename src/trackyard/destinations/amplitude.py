"""Amplitude: events through the HTTP V2 API, users through Identify, groups through Group Identify.

Follows Segment's Amplitude (Actions) mapping (destinations-analytics.md §2), with these
decisions on its open questions:

* Track, page and screen go to `/2/httpapi` (or `/batch` with `use_batch_endpoint`, for
  high-volume or historical data: 1,000 instead of 30 events/s per device), batched,
  where Segment sends one event per request. `time` is epoch ms of `timestamp`;
  `insert_id` is the messageId itself (Amplitude restricts neither its length nor its
  characters), so retries and replays dedupe for 7 days.
* `device_id` is `context.device.id`, else the anonymousId (Segment Classic server-side);
  identify and group carry both ids so Amplitude links the anonymous device to the user.
* User properties never mix plain keys with operations, which Amplitude rejects: traits
  go inside `$set`, with the current `utm_*` / `referrer` from context; `$setOnce` carries
  `initial_utm_*` / `initial_referrer`.
* Device and OS come from `context` when the SDK sent them; for browsers the raw
  `user_agent` is sent and Amplitude derives browser, OS and device from it.
  `library` is the event's `context.library` as `name/version`.
* Page and screen become `Viewed <name>` (Segment Actions); without a name, Classic's
  `Loaded a Page` / `Loaded a Screen`.
* Order Completed keeps its name and carries the order's revenue (`revenue`, else
  `total`; `revenueType` `Purchase`); plus one `Product Purchased` per product with the
  product as event properties and `insert_id` `<messageId>-product-<n>`. With
  `track_revenue_per_product` the revenue moves from the order to the products. Amplitude
  converts no currency.
* Group: the group type and value come from the traits named by `group_type_trait` /
  `group_value_trait`, else type `[Segment] Group` (Segment Classic's, so existing charts
  keep working) with the groupId. One Identify call adds the group to the user, one Group
  Identify call sets the traits on the group.
* Alias maps previousId to the userId through `/usermap`, which needs Amplitude's
  Portfolio add-on: off unless `map_aliases` is set (Segment Classic's `sendAlias`).
* A 400 listing events (`events_with_invalid_fields`, `events_with_missing_fields`,
  `events_with_invalid_id_lengths`, `silenced_events`) gives up those events only; the
  others were not ingested and are retried. "Invalid API key" or a `missing_field` gives
  up the whole request. A 429 gives up the throttled events of users or devices over
  their daily quota, retries the other throttled ones after 30 s and the rest at once;
  Identify, Group Identify and usermap pause 15 s on a 429. Whether HTTP V2 throttles a
  device at 30 or 10 events/s (the docs disagree) does not matter: the 429 says which.

Limits: 1,000 payloads per request (Group Identify takes at most 1,024; HTTP V2 and
usermap 2,000) and 900 kB of JSON (1 MB per request, less room for the `api_key`
wrapper and form encoding). The only request rate Amplitude publishes is the Starter
plan's 100 batches/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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
    Skip,
    base_url,
    classify_status,
    retry_after_seconds,
    setting,
)
from trackyard.spec.timestamps import parse_ms

US_HOST = "https://api2.amplitude.com"
US_USERMAP_HOST = "https://api.amplitude.com"
EU_HOST = "https://api.eu.amplitude.com"
REGIONS = ("US", "EU")
FORM_PATHS = {"identify": "/identify", "groupidentify": "/groupidentify", "usermap": "/usermap"}
EVENT_PATHS = ("/2/httpapi", "/batch")
DEFAULT_GROUP_TYPE = "[Segment] Group"
THROTTLED_EVENT_PAUSE = 30.0  # s, Amplitude's advice for events in `throttled_events`
THROTTLED_IDENTIFY_PAUSE = 15.0  # s, Amplitude's advice for a throttled Identify call

# Amplitude field <- path into the Segment event; the Identify API takes exactly these.
DEVICE_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("app_version", ("context", "app", "version")),
    ("os_name", ("context", "os", "name")),
    ("os_version", ("context", "os", "version")),
    ("device_brand", ("context", "device", "brand")),
    ("device_manufacturer", ("context", "device", "manufacturer")),
    ("device_model", ("context", "device", "model")),
    ("carrier", ("context", "network", "carrier")),
    ("country", ("context", "location", "country")),
    ("region", ("context", "location", "region")),
    ("city", ("context", "location", "city")),
    ("language", ("context", "locale")),
)
EVENT_ONLY_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ip", ("context", "ip")),
    ("location_lat", ("context", "location", "latitude")),
    ("location_lng", ("context", "location", "longitude")),
    ("user_agent", ("context", "userAgent")),
)
# user property <- key of context.campaign
UTM_FIELDS = (
    ("utm_source", "source"),
    ("utm_medium", "medium"),
    ("utm_campaign", "name"),
    ("utm_term", "term"),
    ("utm_content", "content"),
)
PLATFORMS = {"ios": "iOS", "android": "Android"}
REJECTED_EVENT_LISTS = {
    "events_with_invalid_fields": "invalid field",
    "events_with_missing_fields": "missing field",
    "events_with_invalid_id_lengths": "id too short",
}


@dataclass(frozen=True, kw_only=True)
class AmplitudeSettings(HTTPSettings):
    api_key: str = setting(label="API key", secret=True, help="Project settings → General → API Key.")
    region: str = setting(
        label="Data residency",
        default="US",
        choices=REGIONS,
        help="EU for projects in Amplitude's EU data center.",
    )
    use_batch_endpoint: bool = setting(
        label="Use the Batch API",
        default=False,
        help="Send events to /batch: 1,000 instead of 30 events/s per user or device.",
    )
    min_id_length: int = setting(
        label="Minimum id length",
        default=0,
        help="Accept user and device ids shorter than Amplitude's 5 characters; 0 keeps Amplitude's.",
    )
    track_revenue_per_product: bool = setting(
        label="Revenue per product",
        default=False,
        help="Order Completed: record revenue on each Product Purchased instead of on the order.",
    )
    map_aliases: bool = setting(
        label="Map aliases (Portfolio)",
        default=False,
        help="Send alias calls to the User Mapping API, which needs Amplitude's Portfolio add-on.",
    )
    group_type_trait: str | None = setting(
        label="Group type trait",
        default=None,
        help="The group trait holding the group type; without it the type is [Segment] Group.",
    )
    group_value_trait: str | None = setting(
        label="Group value trait",
        default=None,
        help="The group trait holding the group value; without it the value is the groupId.",
    )


class Amplitude(Destination[AmplitudeSettings]):
    slug = "amplitude"
    name = "Amplitude"
    category = Category.ANALYTICS
    description = "Product analytics: events, revenue, user properties and groups."
    Settings = AmplitudeSettings
    batching = Batching(max_events=1000, max_bytes=900_000, max_wait=1.0)
    default_rate_limit = 100.0
    dedupe_field = "insert_id"

    # -- translation ---------------------------------------------------------------------

    def track(self, event: Event, settings: AmplitudeSettings) -> Payload | list[Payload]:
        name = event.get("event") or ""
        properties = event.get("properties") or {}
        body = _event_body(name, properties, event)
        if name != "Order Completed":
            return Payload("events", body)
        products = [product for product in properties.get("products") or [] if isinstance(product, dict)]
        if not (products and settings.track_revenue_per_product):
            body.update(_revenue_fields(properties))
        return [Payload("events", body), *_product_purchases(products, event, settings)]

    def page(self, event: Event, settings: AmplitudeSettings) -> Payload:
        name = _viewed_name(event, "Loaded a Page")
        return Payload("events", _event_body(name, event.get("properties") or {}, event))

    def screen(self, event: Event, settings: AmplitudeSettings) -> Payload:
        name = _viewed_name(event, "Loaded a Screen")
        return Payload("events", _event_body(name, event.get("properties") or {}, event))

    def identify(self, event: Event, settings: AmplitudeSettings) -> Payload:
        identification = {**_ids(event), **_device_fields(event, DEVICE_FIELDS)}
        user_properties = _user_properties(event, event.get("traits") or {})
        if user_properties:
            identification["user_properties"] = user_properties
        return Payload("identify", identification)

    def group(self, event: Event, settings: AmplitudeSettings) -> list[Payload]:
        traits = event.get("traits") or {}
        group_type, group_value = _group_of(event, traits, settings)
        payloads = []
        if event.get("userId") or _device_id(event):
            membership = {
                **_ids(event),
                "groups": {group_type: group_value},
                "user_properties": {"$set": {group_type: group_value}},
            }
            payloads.append(Payload("identify", membership))
        if traits:
            group_identify = {
                "group_type": group_type,
                "group_value": group_value,
                "group_properties": traits,
            }
            payloads.append(Payload("groupidentify", group_identify))
        if not payloads:
            raise Skip("group call without a user, a device or traits: nothing to send")
        return payloads

    def alias(self, event: Event, settings: AmplitudeSettings) -> Payload:
        if not settings.map_aliases:
            raise Skip("alias needs Amplitude's Portfolio add-on; turn on 'map_aliases' to send it")
        previous_id, user_id = event.get("previousId"), event.get("userId")
        if not previous_id or not user_id or previous_id == user_id:
            raise Skip("alias needs a previousId and a different userId")
        return Payload("usermap", {"user_id": previous_id, "global_user_id": user_id})

    # -- delivery ------------------------------------------------------------------------

    def request(self, endpoint: str, bodies: list[Any], settings: AmplitudeSettings) -> Request:
        url = base_url(settings, _default_host(endpoint, settings.region)) + _path(endpoint, settings)
        options = {"min_id_length": settings.min_id_length} if settings.min_id_length else None
        if endpoint == "events":
            data: dict[str, Any] = {"api_key": settings.api_key, "events": bodies}
            if options:
                data["options"] = options
            return Request.json(url, data)
        field = "mapping" if endpoint == "usermap" else "identification"
        fields = {"api_key": settings.api_key, field: _json(bodies)}
        if options and endpoint == "identify":
            fields["options"] = _json(options)
        return Request.form(url, fields)

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        if urlsplit(request.url).path.endswith(EVENT_PATHS):
            return _event_outcomes(response, request, count)
        if response.status == 429:
            pause = retry_after_seconds(response.headers) or THROTTLED_IDENTIFY_PAUSE
            return Outcome.retry(f"HTTP 429: {response.text[:200]}", pause)
        return classify_status(response)


# -- events ------------------------------------------------------------------------------


def _event_body(event_type: str, properties: dict[str, Any], event: Event) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_type": event_type,
        **_ids(event),
        "time": _time_ms(event),
        "insert_id": event["messageId"],
        "event_properties": properties,
        **_device_fields(event, DEVICE_FIELDS + EVENT_ONLY_FIELDS),
        **_advertising_ids(event),
        "library": _library(event),
    }
    user_properties = _user_properties(event, event.get("traits") or {})
    if user_properties:
        body["user_properties"] = user_properties
    body.update(_integration_options(event))
    return body


def _product_purchases(
    products: list[dict[str, Any]], event: Event, settings: AmplitudeSettings
) -> list[Payload]:
    payloads = []
    for number, product in enumerate(products, start=1):
        body = _event_body("Product Purchased", product, event)
        body["insert_id"] = f"{event['messageId']}-product-{number}"
        if settings.track_revenue_per_product:
            body.update(_revenue_fields(product))
        payloads.append(Payload("events", body))
    return payloads


def _revenue_fields(properties: dict[str, Any]) -> dict[str, Any]:
    """Amplitude's revenue keys: revenue = price × quantity when both are numbers."""
    price, quantity = _number(properties.get("price")), _number(properties.get("quantity"))
    revenue = (
        price * quantity
        if price is not None and quantity is not None
        else _number(properties.get("revenue", properties.get("total")))
    )
    if not revenue:
        return {}
    fields: dict[str, Any] = {"revenue": revenue, "revenueType": properties.get("revenueType") or "Purchase"}
    if price is not None:
        fields["price"] = price
    if quantity is not None:
        fields["quantity"] = round(quantity)
    product_id = properties.get("productId") or properties.get("product_id")
    if product_id:
        fields["productId"] = str(product_id)
    return fields


def _viewed_name(event: Event, unnamed: str) -> str:
    name = event.get("name") or (event.get("properties") or {}).get("name")
    return f"Viewed {name}" if name else unnamed


def _time_ms(event: Event) -> int:
    millis = parse_ms(event.get("timestamp"))
    if millis is None:
        raise Skip(f"event has no valid timestamp: {event.get('timestamp')!r}")
    return millis


def _integration_options(event: Event) -> dict[str, Any]:
    """`session_id` and `groups` from `integrations.Amplitude` (or `Actions Amplitude`)."""
    integrations = event.get("integrations") or {}
    options = integrations.get("Actions Amplitude") or integrations.get("Amplitude")
    if not isinstance(options, dict):
        return {}
    found: dict[str, Any] = {}
    session_id = options.get("session_id")
    if isinstance(session_id, int | str) and str(session_id).lstrip("-").isdigit():
        found["session_id"] = int(session_id)
    if isinstance(options.get("groups"), dict):
        found["groups"] = options["groups"]
    return found


# -- identity, device, user properties ----------------------------------------------------


def _ids(event: Event) -> dict[str, str]:
    ids = {"user_id": event.get("userId"), "device_id": _device_id(event)}
    present = {key: value for key, value in ids.items() if value}
    if not present:
        raise Skip("Amplitude needs a userId or a device id")
    return present


def _device_id(event: Event) -> str | None:
    return _lookup(event, ("context", "device", "id")) or event.get("anonymousId")


def _device_fields(event: Event, fields: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, Any]:
    found = {key: _lookup(event, path) for key, path in fields}
    found["platform"] = _platform(event)
    return {key: value for key, value in found.items() if value is not None}


def _platform(event: Event) -> str | None:
    device_type = _lookup(event, ("context", "device", "type"))
    if device_type:
        return PLATFORMS.get(str(device_type).lower(), device_type)
    return "Web" if _lookup(event, ("context", "library", "name")) == "analytics.js" else None


def _advertising_ids(event: Event) -> dict[str, str]:
    """iOS: idfa and idfv; Android: adid. Amplitude's names depend on the platform."""
    device = _lookup(event, ("context", "device")) or {}
    device_type = str(device.get("type", "")).lower()
    if device_type == "ios":
        ids = {"idfa": device.get("advertisingId"), "idfv": device.get("id")}
    elif device_type == "android":
        ids = {"adid": device.get("advertisingId")}
    else:
        return {}
    return {key: value for key, value in ids.items() if value}


def _library(event: Event) -> str:
    library = _lookup(event, ("context", "library")) or {}
    name, version = library.get("name"), library.get("version")
    if not name:
        return "trackyard"
    return f"{name}/{version}" if version else name


def _user_properties(event: Event, traits: dict[str, Any]) -> dict[str, Any]:
    """Traits and attribution as operations only: Amplitude rejects plain keys beside them."""
    attribution = _attribution(event)
    operations = {
        "$set": {**traits, **attribution},
        "$setOnce": {f"initial_{key}": value for key, value in attribution.items()},
    }
    return {operation: values for operation, values in operations.items() if values}


def _attribution(event: Event) -> dict[str, Any]:
    campaign = _lookup(event, ("context", "campaign")) or {}
    found = {key: campaign.get(source) for key, source in UTM_FIELDS}
    found["referrer"] = _lookup(event, ("context", "page", "referrer"))
    return {key: value for key, value in found.items() if value}


def _group_of(event: Event, traits: dict[str, Any], settings: AmplitudeSettings) -> tuple[str, str]:
    type_trait, value_trait = settings.group_type_trait, settings.group_value_trait
    if type_trait and value_trait and traits.get(type_trait) and traits.get(value_trait):
        return str(traits[type_trait]), str(traits[value_trait])
    if not event.get("groupId"):
        raise Skip("group call without a groupId")
    return DEFAULT_GROUP_TYPE, str(event["groupId"])


def _lookup(event: Event, path: tuple[str, ...]) -> Any:
    value: Any = event
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _number(value: object) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


# -- requests and responses --------------------------------------------------------------


def _default_host(endpoint: str, region: str) -> str:
    if region == "EU":
        return EU_HOST
    return US_USERMAP_HOST if endpoint == "usermap" else US_HOST


def _path(endpoint: str, settings: AmplitudeSettings) -> str:
    if endpoint == "events":
        return "/batch" if settings.use_batch_endpoint else "/2/httpapi"
    return FORM_PATHS[endpoint]


def _json(data: Any) -> str:
    return orjson.dumps(data).decode()


def _event_outcomes(response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
    body = response.json()
    details = body if isinstance(body, dict) else {}
    if response.status == 400:
        return _invalid_event_outcomes(details, response, count)
    if response.status == 429:
        return _throttled_event_outcomes(details, response, request, count)
    return classify_status(response)


def _invalid_event_outcomes(body: dict[str, Any], response: Response, count: int) -> Outcome | list[Outcome]:
    """Only the events Amplitude lists give up; it ingested none, so the others are resent."""
    error = str(body.get("error", ""))
    if error.startswith("Invalid API key") or body.get("missing_field"):
        return Outcome.give_up(f"HTTP 400: {error or body['missing_field']}")
    rejected = _rejected_events(body)
    if not rejected:
        return classify_status(response)
    return [
        Outcome.give_up(f"Amplitude rejected the event: {rejected[index]}")
        if index in rejected
        else Outcome.retry("resent: Amplitude rejected other events of the batch")
        for index in range(count)
    ]


def _rejected_events(body: dict[str, Any]) -> dict[int, str]:
    rejected: dict[int, str] = {}
    for key, problem in REJECTED_EVENT_LISTS.items():
        for field, indexes in (body.get(key) or {}).items():
            rejected.update((index, f"{problem} {field!r}") for index in indexes)
    rejected.update((index, "device or user silenced") for index in body.get("silenced_events") or [])
    return rejected


def _throttled_event_outcomes(
    body: dict[str, Any], response: Response, request: Request, count: int
) -> Outcome | list[Outcome]:
    """Over the daily quota: give up. Throttled: wait 30 s. The rest of the batch: resend."""
    throttled = set(body.get("throttled_events") or [])
    header_pause = retry_after_seconds(response.headers)
    if not throttled:
        return Outcome.retry(f"HTTP 429: {response.text[:200]}", header_pause or THROTTLED_EVENT_PAUSE)
    over_quota_users = body.get("exceeded_daily_quota_users") or {}
    over_quota_devices = body.get("exceeded_daily_quota_devices") or {}
    events = orjson.loads(request.body)["events"]
    outcomes = []
    for index in range(count):
        event = events[index]
        if index not in throttled:
            outcomes.append(Outcome.retry("resent: other events of the batch were throttled", header_pause))
        elif event.get("user_id") in over_quota_users or event.get("device_id") in over_quota_devices:
            outcomes.append(Outcome.give_up("Amplitude: the user or device exceeded its daily quota"))
        else:
            pause = header_pause or THROTTLED_EVENT_PAUSE
            outcomes.append(Outcome.retry(f"throttled above {body.get('eps_threshold')} events/s", pause))
    return outcomes


destination = Amplitude()
