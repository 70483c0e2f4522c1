"""Mixpanel: events through the Import API, profiles through /engage, groups through /groups.

Follows Segment's Mixpanel (Actions) mapping (destinations-analytics.md §1), with these
decisions on its open questions:

* Events go to `POST /import?strict=1` as a JSON array, Basic-authenticated with the API
  secret when one is set, else with the project token (Mixpanel documents both; the token
  needs no extra secret). `/engage` and `/groups` take JSON arrays with `$token` inside
  each record and `?verbose=1`, so a rejected update answers `{"status": 0, "error": ...}`
  rather than a bare `0`. `/track` is not used: it silently drops events older than 5
  days, which would lose identity links during replays.
* `time` is epoch milliseconds of the event's `timestamp`.
* `$insert_id` is uuid5(namespace, messageId): Mixpanel takes at most 36 characters of
  `[A-Za-z0-9-]`, which ids such as `ajs-next-…` can break. Extra events derived from
  one message hash the messageId with a suffix, so each keeps a stable id of its own.
* Identity follows the project's ID merge API (setting `id_merge`):
  - `simplified` (Mixpanel's default since 2023): every event carries
    `$device_id` = anonymousId and `$user_id` = userId, and Mixpanel merges the two when
    an event carries both; `distinct_id` is the userId, else `$device:<anonymousId>`,
    the value Mixpanel itself derives. Alias has no meaning there and is skipped.
  - `original`: `distinct_id` is userId, else anonymousId; an identify carrying both ids
    also sends `$identify`, and an alias sends `$create_alias`, both through /import.
* Page and screen become `Viewed <name>` (Segment Actions); without a name, Classic's
  `Loaded a Page` / `Loaded a Screen` rather than Actions' bare `Viewed `.
* Order Completed is sent as is plus one `Product Purchased` per product (order-level
  keys dropped, the product's keys added), each 1, 2, 3… ms before the order, as Segment
  does. Classic's track-charge to `$transactions` is not sent: Mixpanel's revenue
  reports read event properties.
* Identify always sets the traits on the profile (Classic's `people` switch, whose default
  Segment's catalog and docs contradict, is not offered), with Mixpanel's reserved names
  (`$email`, `$first_name`, `$created`…) and `$ip` from context. A group call sets the
  traits on the group profile whose key is the `group_key` setting and whose id is that
  trait, else the groupId.
* `mp_lib` is `trackyard: <library>`, `$lib_version` the library's version, `$source`
  `trackyard`; `$browser`/`$browser_version` are sniffed from the user agent as
  Mixpanel's web SDK does. Segment's legacy copies of the ids (`id`, `$anon_id`,
  `$identified_id`) on ordinary events are left out: Mixpanel derives nothing from them.
* A 400 from /import with `failed_records` gives up only the listed events; the rest were
  imported. Mixpanel sends no Retry-After on 429; a 413 or 401/403 gives up.

Limits: 2,000 events per request and 2 MB (the import page's limit; the 413 page says
10 MB); the ingestion rate limit is 2 GB of JSON per minute, about 15 full requests/s.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

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
    setting,
)
from trackyard.spec.timestamps import parse_ms

REGION_HOSTS = {
    "US": "https://api.mixpanel.com",
    "EU": "https://api-eu.mixpanel.com",
    "IN": "https://api-in.mixpanel.com",
}
ENDPOINT_PATHS = {"import": "/import?strict=1", "engage": "/engage?verbose=1", "groups": "/groups?verbose=1"}
# Fixed for good: a new namespace would give every replayed event a new $insert_id.
INSERT_ID_NAMESPACE = uuid.UUID("6f1c2a4e-93b5-5d0e-8a7c-2b9e4d61f0a3")

# Mixpanel property <- path into the Segment event (Segment Actions' default mapping).
CONTEXT_PROPERTIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ip", ("context", "ip")),
    ("$current_url", ("context", "page", "url")),
    ("$referrer", ("context", "page", "referrer")),
    ("$os", ("context", "os", "name")),
    ("$os_version", ("context", "os", "version")),
    ("$app_name", ("context", "app", "name")),
    ("$app_namespace", ("context", "app", "namespace")),
    ("$app_build_number", ("context", "app", "build")),
    ("$app_version_string", ("context", "app", "version")),
    ("app_platform", ("context", "app", "platform")),
    ("$device", ("context", "device", "name")),
    ("$device_name", ("context", "device", "name")),
    ("$device_type", ("context", "device", "type")),
    ("$manufacturer", ("context", "device", "manufacturer")),
    ("$model", ("context", "device", "model")),
    ("advertising_id", ("context", "device", "advertisingId")),
    ("ad_tracking_enabled", ("context", "device", "adTrackingEnabled")),
    ("$carrier", ("context", "network", "carrier")),
    ("$bluetooth_enabled", ("context", "network", "bluetooth")),
    ("$cellular_enabled", ("context", "network", "cellular")),
    ("$wifi_enabled", ("context", "network", "wifi")),
    ("$screen_width", ("context", "screen", "width")),
    ("$screen_height", ("context", "screen", "height")),
    ("$screen_density", ("context", "screen", "density")),
    ("$locale", ("context", "locale")),
    ("timezone", ("context", "timezone")),
    ("mp_country_code", ("context", "location", "country")),
    ("$lib_version", ("context", "library", "version")),
    ("$group_id", ("context", "groupId")),
    ("utm_source", ("context", "campaign", "source")),
    ("utm_medium", ("context", "campaign", "medium")),
    ("utm_campaign", ("context", "campaign", "name")),
    ("utm_term", ("context", "campaign", "term")),
    ("utm_content", ("context", "campaign", "content")),
    ("$mobile", ("context", "userAgentData", "mobile")),
    ("$platform", ("context", "userAgentData", "platform")),
    ("$bitness", ("context", "userAgentData", "bitness")),
    ("$platformVersion", ("context", "userAgentData", "platformVersion")),
    ("$uaFullVersion", ("context", "userAgentData", "uaFullVersion")),
    ("$wow64", ("context", "userAgentData", "wow64")),
)
# Properties the user's own event properties never override: they identify and dedupe.
RESERVED_PROPERTIES = frozenset(
    {"time", "distinct_id", "$insert_id", "$device_id", "$user_id", "$group_id", "token"}
)
ORDER_LEVEL_KEYS = frozenset(
    {
        "affiliation",
        "subtotal",
        "total",
        "revenue",
        "shipping",
        "tax",
        "discount",
        "coupon",
        "currency",
        "order_number",
        "products",
    }
)
PROFILE_TRAITS = {
    "email": "$email",
    "firstName": "$first_name",
    "lastName": "$last_name",
    "name": "$name",
    "username": "$username",
    "phone": "$phone",
}
CREATED_TRAITS = ("created", "createdAt", "created_at")
# Checked in order: the first match names the browser (Mixpanel web SDK's precedence).
BROWSERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("Microsoft Edge", r"Edg(?:e|A|iOS)?/(\d+(?:\.\d+)?)"),
        ("Opera", r"OPR/(\d+(?:\.\d+)?)"),
        ("Samsung Internet", r"SamsungBrowser/(\d+(?:\.\d+)?)"),
        ("Chrome iOS", r"CriOS/(\d+(?:\.\d+)?)"),
        ("Firefox iOS", r"FxiOS/(\d+(?:\.\d+)?)"),
        ("Chrome", r"Chrome/(\d+(?:\.\d+)?)"),
        ("Firefox", r"Firefox/(\d+(?:\.\d+)?)"),
        ("Mobile Safari", r"Version/(\d+(?:\.\d+)?).*Mobile.*Safari"),
        ("Safari", r"Version/(\d+(?:\.\d+)?).*Safari"),
    )
)


@dataclass(frozen=True, kw_only=True)
class MixpanelSettings(HTTPSettings):
    project_token: str = setting(
        label="Project token",
        secret=True,
        help="Project Settings → Overview → Access Keys. Identifies the project and authenticates /import.",
    )
    api_secret: str | None = setting(
        label="API secret",
        default=None,
        secret=True,
        help="Legacy project secret; when set it authenticates /import instead of the token.",
    )
    region: str = setting(
        label="Data residency",
        default="US",
        choices=tuple(REGION_HOSTS),
        help="The project's data residency: US, EU or India.",
    )
    id_merge: str = setting(
        label="ID merge API",
        default="simplified",
        choices=("simplified", "original"),
        help="Project Settings → Identity Merge. Original also sends $identify and $create_alias.",
    )
    group_key: str = setting(
        label="Group key",
        default="$group_id",
        help="The group key defined in Mixpanel's project settings; group calls update that group profile.",
    )
    purchase_event_per_product: bool = setting(
        label="Product Purchased per product",
        default=True,
        help="With Order Completed, also send one Product Purchased event per product.",
    )


class Mixpanel(Destination[MixpanelSettings]):
    slug = "mixpanel"
    name = "Mixpanel"
    category = Category.ANALYTICS
    description = "Product analytics: events through the Import API, user and group profiles."
    Settings = MixpanelSettings
    batching = Batching(max_events=2000, max_bytes=2_000_000, max_wait=1.0)
    default_rate_limit = 15.0
    dedupe_field = "$insert_id"

    # -- translation ---------------------------------------------------------------------

    def track(self, event: Event, settings: MixpanelSettings) -> list[Payload]:
        name = event.get("event") or ""
        properties = event.get("properties") or {}
        payloads = [Payload("import", _event_body(name, properties, event, settings))]
        if name == "Order Completed" and settings.purchase_event_per_product:
            payloads.extend(_product_purchases(properties, event, settings))
        return payloads

    def page(self, event: Event, settings: MixpanelSettings) -> Payload:
        name = _viewed_name(event, "Loaded a Page")
        return Payload("import", _event_body(name, event.get("properties") or {}, event, settings))

    def screen(self, event: Event, settings: MixpanelSettings) -> Payload:
        name = _viewed_name(event, "Loaded a Screen")
        return Payload("import", _event_body(name, event.get("properties") or {}, event, settings))

    def identify(self, event: Event, settings: MixpanelSettings) -> list[Payload]:
        payloads = []
        if settings.id_merge == "original" and _links_anonymous_to_user(event):
            payloads.append(Payload("import", _identify_event(event, settings)))
        traits = event.get("traits") or {}
        if traits:
            payloads.append(Payload("engage", _profile_update(traits, event, settings)))
        if not payloads:
            raise Skip("identify without traits and without an id to link: nothing to send")
        return payloads

    def group(self, event: Event, settings: MixpanelSettings) -> Payload:
        traits = event.get("traits") or {}
        group_id = traits.get(settings.group_key) or event.get("groupId")
        if not group_id:
            raise Skip("group call without a groupId")
        if not traits:
            raise Skip("group call without traits: nothing to set on the group profile")
        return Payload(
            "groups",
            {
                "$token": settings.project_token,
                "$group_key": settings.group_key,
                "$group_id": group_id,
                "$set": _group_traits(traits),
            },
        )

    def alias(self, event: Event, settings: MixpanelSettings) -> Payload:
        if settings.id_merge == "simplified":
            raise Skip("Mixpanel's Simplified ID Merge has no alias; ids merge through events")
        previous_id = event.get("previousId")
        new_id = event.get("userId") or event.get("anonymousId")
        if not previous_id or not new_id or previous_id == new_id:
            raise Skip("alias needs a previousId and a different userId")
        return Payload(
            "import",
            {
                "event": "$create_alias",
                "properties": {
                    "distinct_id": previous_id,
                    "alias": new_id,
                    "token": settings.project_token,
                    "time": _time_ms(event),
                    "$insert_id": insert_id(event["messageId"]),
                },
            },
        )

    # -- delivery ------------------------------------------------------------------------

    def request(self, endpoint: str, bodies: list[Any], settings: MixpanelSettings) -> Request:
        url = base_url(settings, REGION_HOSTS[settings.region]) + ENDPOINT_PATHS[endpoint]
        headers = {"Accept": "application/json"}
        if endpoint == "import":
            credential = settings.api_secret or settings.project_token
            headers["Authorization"] = "Basic " + base64.b64encode(f"{credential}:".encode()).decode()
        return Request.json(url, bodies, headers)

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        if urlsplit(request.url).path.endswith("/import"):
            return _import_outcomes(response, count)
        return _profile_outcome(response)


# -- events ------------------------------------------------------------------------------


def insert_id(key: str) -> str:
    """A `$insert_id` Mixpanel accepts (36 chars of [0-9a-f-]) that is stable for `key`."""
    return str(uuid.uuid5(INSERT_ID_NAMESPACE, key))


def _event_body(name: str, properties: dict[str, Any], event: Event, settings: MixpanelSettings) -> dict:
    return {
        "event": name,
        "properties": {
            **_common_properties(event, settings),
            **_without_reserved(properties),
            "time": _time_ms(event),
            "$insert_id": insert_id(event["messageId"]),
        },
    }


def _product_purchases(order: dict[str, Any], event: Event, settings: MixpanelSettings) -> list[Payload]:
    common = {key: value for key, value in order.items() if key not in ORDER_LEVEL_KEYS}
    order_time = _time_ms(event)
    payloads = []
    for index, product in enumerate(order.get("products") or []):
        properties = {
            **_common_properties(event, settings),
            **_without_reserved({**common, **product}),
            "time": order_time - (index + 1),
            "$insert_id": insert_id(f"{event['messageId']}:product:{index}"),
        }
        payloads.append(Payload("import", {"event": "Product Purchased", "properties": properties}))
    return payloads


def _common_properties(event: Event, settings: MixpanelSettings) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "distinct_id": _distinct_id(event, settings),
        "$source": "trackyard",
        "mp_lib": _library_label(event),
    }
    if event.get("anonymousId"):
        properties["$device_id"] = event["anonymousId"]
    if event.get("userId"):
        properties["$user_id"] = event["userId"]
    for key, path in CONTEXT_PROPERTIES:
        value = _lookup(event, path)
        if value is not None:
            properties[key] = value
    properties.update(_browser(_lookup(event, ("context", "userAgent"))))
    return properties


def _distinct_id(event: Event, settings: MixpanelSettings) -> str:
    """userId; else the anonymous id as the project's ID merge API names it; else "" (no user)."""
    if event.get("userId"):
        return event["userId"]
    anonymous_id = event.get("anonymousId")
    if not anonymous_id:
        return ""
    return f"$device:{anonymous_id}" if settings.id_merge == "simplified" else anonymous_id


def _library_label(event: Event) -> str:
    library = _lookup(event, ("context", "library", "name"))
    return f"trackyard: {library}" if library else "trackyard"


def _browser(user_agent: object) -> dict[str, Any]:
    if not isinstance(user_agent, str):
        return {}
    for name, pattern in BROWSERS:
        match = pattern.search(user_agent)
        if match:
            return {"$browser": name, "$browser_version": float(match.group(1))}
    return {}


def _viewed_name(event: Event, unnamed: str) -> str:
    name = event.get("name") or (event.get("properties") or {}).get("name")
    return f"Viewed {name}" if name else unnamed


def _without_reserved(properties: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in properties.items() if key not in RESERVED_PROPERTIES}


def _time_ms(event: Event) -> int:
    millis = parse_ms(event.get("timestamp"))
    if millis is None:
        raise Skip(f"event has no valid timestamp: {event.get('timestamp')!r}")
    return millis


def _lookup(event: Event, path: tuple[str, ...]) -> Any:
    value: Any = event
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# -- identity and profiles ---------------------------------------------------------------


def _links_anonymous_to_user(event: Event) -> bool:
    user_id, anonymous_id = event.get("userId"), event.get("anonymousId")
    return bool(user_id and anonymous_id and user_id != anonymous_id)


def _identify_event(event: Event, settings: MixpanelSettings) -> dict[str, Any]:
    return {
        "event": "$identify",
        "properties": {
            "distinct_id": event["userId"],
            "$identified_id": event["userId"],
            "$anon_id": event["anonymousId"],
            "token": settings.project_token,
            "time": _time_ms(event),
            "$insert_id": insert_id(f"{event['messageId']}:identify"),
        },
    }


def _profile_update(traits: dict[str, Any], event: Event, settings: MixpanelSettings) -> dict[str, Any]:
    update: dict[str, Any] = {
        "$token": settings.project_token,
        "$distinct_id": _distinct_id(event, settings),
        "$set": _profile_traits(traits),
    }
    ip = _lookup(event, ("context", "ip"))
    if ip:
        update["$ip"] = ip
    return update


def _profile_traits(traits: dict[str, Any]) -> dict[str, Any]:
    renamed = {PROFILE_TRAITS.get(key, key): value for key, value in traits.items()}
    first, last = traits.get("firstName"), traits.get("lastName")
    if "$name" not in renamed and first and last:
        renamed["$name"] = f"{first} {last}"
    return _with_created(renamed, traits)


def _group_traits(traits: dict[str, Any]) -> dict[str, Any]:
    renamed = {"$name" if key == "name" else key: value for key, value in traits.items()}
    return _with_created(renamed, traits)


def _with_created(renamed: dict[str, Any], traits: dict[str, Any]) -> dict[str, Any]:
    """`$created` from the first of created / createdAt / created_at; the source keys go."""
    created = next((traits[key] for key in CREATED_TRAITS if traits.get(key) is not None), None)
    result = {key: value for key, value in renamed.items() if key not in CREATED_TRAITS}
    if created is not None:
        result["$created"] = created
    return result


# -- responses ---------------------------------------------------------------------------


def _import_outcomes(response: Response, count: int) -> Outcome | list[Outcome]:
    """A strict-mode 400 is a partial success: only the events in `failed_records` failed."""
    failed = _failed_records(response) if response.status == 400 else {}
    if not failed:
        return classify_status(response)
    return [
        Outcome.give_up(f"Mixpanel rejected the event: {failed[index]}")
        if index in failed
        else Outcome.delivered("imported; other events of the batch were rejected")
        for index in range(count)
    ]


def _failed_records(response: Response) -> dict[int, str]:
    body = response.json()
    records = body.get("failed_records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        return {}
    return {
        record["index"]: f"{record.get('field', '')}: {record.get('message', '')}"
        for record in records
        if isinstance(record, dict) and isinstance(record.get("index"), int)
    }


def _profile_outcome(response: Response) -> Outcome:
    """/engage and /groups answer 200 even for invalid updates; the body says which it was."""
    if response.status != 200:
        return classify_status(response)
    body = response.json()
    status = body.get("status") if isinstance(body, dict) else body
    if status == 1:
        return Outcome.delivered("HTTP 200")
    error = body.get("error") if isinstance(body, dict) else response.text[:200]
    return Outcome.give_up(f"Mixpanel rejected the update: {error}")


destination = Mixpanel()
