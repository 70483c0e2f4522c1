"""Google Analytics 4 through the Measurement Protocol: Segment's "Google Analytics 4 Cloud".

Wire contract and Segment's mappings: destinations-analytics.md §3. Web data streams only
(`measurement_id` + `client_id`); app streams (`firebase_app_id`) need the Firebase SDK's
app_instance_id, which a Segment event does not carry.

Decisions (the open questions of §3):
* `POST {host}/mp/collect?measurement_id=…&api_secret=…`, host www.google-analytics.com,
  or region1.google-analytics.com when the "region" setting asks for EU collection.
* GA4 answers 2xx to everything, invalid or unauthorised data included, and drops what
  it cannot use without saying so: the response cannot single out a bad event. So 2xx is
  delivered, 408/423/429/5xx are retried (Retry-After honoured), anything else gives up,
  and the payloads are made valid here (names, lengths, value types, limits). The tests
  check them against a fake of Google's validation server (`/debug/mp/collect`), which is
  used in tests only: it needs a real property and tells nothing in production.
* client_id ← the field chosen by "client_id from" (anonymousId by default, as gtag's
  own client id is per browser; or userId), falling back to the other one; an event with
  neither is skipped. user_id ← userId. Both are request-level fields, so the endpoint
  key holds both: up to 25 events of one client and user share a request.
* Time: every event carries its own `timestamp_micros` (the event's timestamp in µs),
  which GA4 prefers to a request-level one; user properties carry theirs too. GA4
  refuses events backdated more than 72 h; the engine gives up long before.
* Every event has `engagement_time_msec: 1`, Segment's constant, without which GA4 does
  not count the user as active.
* track: Segment's e-commerce and lifecycle events become GA4 recommended events with
  the typed parameters of Segment's Actions defaults (RECOMMENDED below; items from
  `products`, or from the properties for single-product events; `index` ← position in
  lists); other properties are not sent with them, as Segment does. Any other event is a
  custom event: its name made valid (characters other than letters, digits and `_`
  become `_`, leading non-letters dropped, at most 40 characters, `custom_` before a
  reserved name or prefix, optionally lower-cased) and its flat properties as
  parameters. A value without a currency is sent as USD (GA4 ignores a value without
  one); a single product's value defaults to price × quantity.
* Parameters and user properties: names in snake_case (`createdAt` → `created_at`:
  GA4 names are letters, digits and `_`, and Segment reports capitals as dropped),
  at most 40 (24 for user properties) characters, reserved prefixes (`firebase_`, `ga_`,
  `google_`) dropped; values: strings cut to 100 characters (page_location 1000,
  page_referrer 420, page_title 300; user properties 36), numbers kept, booleans as
  "true"/"false", null, objects and lists (other than `items`) dropped; at most 25 per
  event and 25 user properties per request.
* page → `page_view` (page_location/page_referrer/page_title from the page's properties,
  falling back to context.page); screen → `screen_view` with `screen_name`; group →
  `join_group` with `group_id`; alias is not taken (GA4 has nothing like it).
* identify → user properties: the traits above, minus personal data Google's terms
  forbid sending (email, phone, names, address, birthday...). GA4 only takes user
  properties along with an event, so they ride on an `identify` event (the "send
  identify" setting turns this off); an identify with no usable trait is skipped.
* GA4 has no deduplication key: a request retried after a lost response may count twice
  (dedupe_field is empty). No request rate limit is documented (default_rate_limit 0).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from trackyard.destinations.base import (
    Batching,
    Category,
    Destination,
    Event,
    HTTPSettings,
    Payload,
    Request,
    SettingsError,
    Skip,
    base_url,
    setting,
)
from trackyard.spec.timestamps import parse_ms

HOSTS = {"global": "https://www.google-analytics.com", "eu": "https://region1.google-analytics.com"}
CLIENT_ID_SOURCES = ("anonymousId", "userId")
MAX_EVENTS = 25  # events per request
MAX_BODY_BYTES = 128_000  # Google's limit is 130 kB per request body
MAX_PARAMS = 25  # per event
MAX_USER_PROPERTIES = 25
EVENT_NAME_LENGTH = 40
USER_PROPERTY_NAME_LENGTH = 24
USER_PROPERTY_VALUE_LENGTH = 36
PARAM_VALUE_LENGTH = 100
LONG_PARAM_VALUES = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
ENGAGEMENT = {"engagement_time_msec": 1}
IDENTIFY_EVENT = "identify"

# Reserved for web streams (page_view is reserved too, yet Google takes it from the Measurement Protocol).
RESERVED_EVENT_NAMES = frozenset(
    {
        "ad_impression",
        "app_remove",
        "app_store_refund",
        "app_store_subscription_cancel",
        "app_store_subscription_renew",
        "click",
        "error",
        "file_download",
        "first_open",
        "first_visit",
        "form_start",
        "form_submit",
        "in_app_purchase",
        "scroll",
        "session_start",
        "user_engagement",
        "view_complete",
        "video_progress",
        "video_start",
        "view_search_results",
    }
)
RESERVED_PREFIXES = ("firebase_", "ga_", "google_")
RESERVED_USER_PROPERTIES = frozenset(
    {"first_open_time", "first_visit_time", "last_deep_link_referrer", "user_id", "first_open_after_install"}
)
# Traits Google's terms forbid as user properties (compared lower-case, letters and digits only);
# any trait whose name holds "email" or "phone" is left out as well.
PERSONAL_TRAITS = frozenset({"name", "firstname", "lastname", "username", "address", "birthday", "avatar"})
PERSONAL_WORDS = ("email", "phone")

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_]+")
_UNDERSCORES = re.compile(r"_{2,}")
_LEADING_NON_LETTERS = re.compile(r"^[^A-Za-z]+")
_MEASUREMENT_ID = re.compile(r"G-[A-Z0-9]+")


@dataclass(frozen=True, kw_only=True)
class GoogleAnalytics4Settings(HTTPSettings):
    measurement_id: str = setting(
        label="Measurement ID",
        help="Admin → Data streams → your web stream → Measurement ID (G-XXXXXXXXXX).",
    )
    api_secret: str = setting(
        label="Measurement Protocol API secret",
        secret=True,
        help="Admin → Data streams → your web stream → Measurement Protocol API secrets → Create.",
    )
    region: str = setting(
        label="Collection region",
        default="global",
        choices=tuple(HOSTS),
        help="global: www.google-analytics.com; eu: region1.google-analytics.com collects in the EU.",
    )
    client_id_source: str = setting(
        label="client_id from",
        default="anonymousId",
        choices=CLIENT_ID_SOURCES,
        help="The Segment field GA4's client_id comes from; the other one when it is missing.",
    )
    lowercase_event_names: bool = setting(
        label="Lower-case custom event names",
        default=False,
        help="'Video Played' becomes video_played instead of Video_Played.",
    )
    send_identify: bool = setting(
        label="Send identify as user properties",
        default=True,
        help="identify → an 'identify' event carrying the traits (minus personal data) as user properties.",
    )

    def __post_init__(self) -> None:
        if not _MEASUREMENT_ID.fullmatch(self.measurement_id.strip()):
            raise SettingsError(
                "google_analytics_4: setting 'measurement_id' must be a web stream's measurement ID "
                f"such as G-ABC123XYZ; got {self.measurement_id!r}"
            )


# -- recommended events ------------------------------------------------------------------

Params = dict[str, Any]


def _search(properties: Params) -> Params:
    return {"search_term": properties.get("query")}


def _item_list(properties: Params) -> Params:
    return {
        "item_list_id": properties.get("list_id"),
        "item_list_name": properties.get("category"),
        "items": _items(properties.get("products")),
    }


def _selected_product(properties: Params) -> Params:
    return {"items": _items([properties], listed=False)}


def _single_product(properties: Params) -> Params:
    return {**_money(properties, _product_value(properties)), "items": _items([properties], listed=False)}


def _cart(properties: Params) -> Params:
    return {
        **_money(properties, _first_number(properties, "value", "revenue", "total")),
        "items": _items(properties.get("products")),
    }


def _checkout(properties: Params) -> Params:
    return {"coupon": properties.get("coupon"), **_cart(properties)}


def _payment_info(properties: Params) -> Params:
    return {"payment_type": properties.get("payment_method"), **_checkout(properties)}


def _order(properties: Params) -> Params:
    return {
        "transaction_id": properties.get("order_id"),
        "affiliation": properties.get("affiliation"),
        "coupon": properties.get("coupon"),
        **_money(properties, _first_number(properties, "total", "revenue", "value")),
        "tax": _number(properties.get("tax")),
        "shipping": _number(properties.get("shipping")),
        "items": _items(properties.get("products")),
    }


def _promotion_clicked(properties: Params) -> Params:
    return {
        "creative_name": properties.get("creative_name"),
        "creative_slot": properties.get("creative"),
        "promotion_id": properties.get("promotion_id"),
        "promotion_name": properties.get("name"),
    }


def _promotion_viewed(properties: Params) -> Params:
    return {**_promotion_clicked(properties), "location_id": properties.get("position")}


def _signed_up(properties: Params) -> Params:
    return {"method": properties.get("type") or properties.get("method")}


def _signed_in(properties: Params) -> Params:
    return {"method": properties.get("method") or properties.get("type")}


# Segment event → (GA4 recommended event, its parameters from the properties).
RECOMMENDED: dict[str, tuple[str, Callable[[Params], Params]]] = {
    "Products Searched": ("search", _search),
    "Product List Viewed": ("view_item_list", _item_list),
    "Product Clicked": ("select_item", _selected_product),
    "Product Viewed": ("view_item", _single_product),
    "Product Added": ("add_to_cart", _single_product),
    "Product Removed": ("remove_from_cart", _single_product),
    "Product Added to Wishlist": ("add_to_wishlist", _single_product),
    "Cart Viewed": ("view_cart", _cart),
    "Checkout Started": ("begin_checkout", _checkout),
    "Payment Info Entered": ("add_payment_info", _payment_info),
    "Order Completed": ("purchase", _order),
    "Order Refunded": ("refund", _order),
    "Promotion Viewed": ("view_promotion", _promotion_viewed),
    "Promotion Clicked": ("select_promotion", _promotion_clicked),
    "Signed Up": ("sign_up", _signed_up),
    "Signed In": ("login", _signed_in),
}

# GA4 item parameter ← Segment product field.
ITEM_FIELDS = (
    ("item_name", "name"),
    ("affiliation", "affiliation"),
    ("coupon", "coupon"),
    ("item_brand", "brand"),
    ("item_category", "category"),
    ("item_variant", "variant"),
)


def _items(products: object, *, listed: bool = True) -> list[Params]:
    """GA4 items from Segment products; `index` (← position) only for products in a list."""
    if not isinstance(products, list):
        return []
    items = [_item(product, listed) for product in products if isinstance(product, Mapping)]
    return [item for item in items if item]


def _item(product: Mapping[str, Any], listed: bool) -> Params:
    item: Params = {}
    product_id = product.get("product_id") or product.get("sku")
    if product_id is not None and not isinstance(product_id, dict | list):
        item["item_id"] = str(product_id)[:PARAM_VALUE_LENGTH]
    for ga4_key, segment_key in ITEM_FIELDS:
        value = _param_value(ga4_key, product.get(segment_key))
        if value is not None:
            item[ga4_key] = value
    for key in ("price", "quantity"):
        number = _number(product.get(key))
        if number is not None:
            item[key] = number
    position = _number(product.get("position"))
    if listed and position is not None:
        item["index"] = position
    # GA4 drops an item with neither an id nor a name
    return item if "item_id" in item or "item_name" in item else {}


def _money(properties: Params, value: float | int | None) -> Params:
    currency = properties.get("currency")
    if value is None:
        return {"currency": str(currency).upper()} if currency else {}
    return {"value": value, "currency": str(currency or "USD").upper()}


def _product_value(properties: Params) -> float | int | None:
    value = _number(properties.get("value"))
    price = _number(properties.get("price"))
    if value is None and price is not None:
        quantity = _number(properties.get("quantity"))
        value = round(price * (1 if quantity is None else quantity), 6)
    return value


def _first_number(properties: Params, *keys: str) -> float | int | None:
    return next((n for n in (_number(properties.get(key)) for key in keys) if n is not None), None)


def _number(value: object) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None  # NaN and infinity are no JSON numbers
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


# -- names and values ----------------------------------------------------------------------


def custom_event_name(name: str, *, lowercase: bool = False) -> str:
    """A valid GA4 event name for a Segment event name (§3.4); Skip when nothing is left of it."""
    cleaned = _UNDERSCORES.sub("_", _NOT_NAME_CHARACTERS.sub("_", name.strip()))
    cleaned = _LEADING_NON_LETTERS.sub("", cleaned).rstrip("_")
    if lowercase:
        cleaned = cleaned.lower()
    if not cleaned:
        raise Skip(f"event name {name!r} has no letter GA4 can use")
    if cleaned.lower() in RESERVED_EVENT_NAMES or cleaned.lower().startswith(RESERVED_PREFIXES):
        cleaned = f"custom_{cleaned}"
    return cleaned[:EVENT_NAME_LENGTH].rstrip("_")


def parameter_name(key: str, limit: int = EVENT_NAME_LENGTH) -> str | None:
    """`createdAt` → `created_at`: snake_case, letters first, within limit; None for reserved or empty."""
    name = _NOT_NAME_CHARACTERS.sub("_", _CAMEL_BOUNDARY.sub("_", key)).lower()
    name = _LEADING_NON_LETTERS.sub("", _UNDERSCORES.sub("_", name))[:limit].rstrip("_")
    if not name or name.startswith(RESERVED_PREFIXES):
        return None
    return name


def _param_value(name: str, value: object, limit: int | None = None) -> str | int | float | None:
    """A scalar GA4 accepts, strings cut to the parameter's limit; None when GA4 would drop it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value[: limit or LONG_PARAM_VALUES.get(name, PARAM_VALUE_LENGTH)]
    return None


def _custom_params(properties: Mapping[str, Any]) -> Params:
    """Flat properties as parameters: valid names, scalar values; the first name wins on a clash."""
    params: Params = {}
    for key, value in properties.items():
        name = parameter_name(str(key))
        scalar = _param_value(name, value) if name else None
        if name and scalar is not None and name not in params and name not in ENGAGEMENT:
            params[name] = scalar
    return params


def _clean(params: Params) -> Params:
    """Typed parameters without the missing ones, strings cut to their limits."""
    cleaned: Params = {}
    for name, value in params.items():
        if name == "items":
            if value:
                cleaned[name] = value
            continue
        scalar = _param_value(name, value)
        if scalar is not None and scalar != "":
            cleaned[name] = scalar
    return cleaned


def user_properties(traits: Mapping[str, Any], timestamp_micros: int | None) -> dict[str, Params]:
    """Traits as GA4 user properties: no personal data, valid names and values, at most 25."""
    properties: dict[str, Params] = {}
    for key, value in traits.items():
        if _is_personal(str(key)):
            continue
        name = parameter_name(str(key), USER_PROPERTY_NAME_LENGTH)
        scalar = _param_value("", value, USER_PROPERTY_VALUE_LENGTH) if name else None
        if not name or scalar is None or name in RESERVED_USER_PROPERTIES or name in properties:
            continue
        entry: Params = {"value": scalar}
        if timestamp_micros is not None:
            entry["timestamp_micros"] = timestamp_micros
        properties[name] = entry
    return dict(itertools.islice(properties.items(), MAX_USER_PROPERTIES))


def _is_personal(key: str) -> bool:
    plain = re.sub(r"[^a-z0-9]", "", key.lower())
    return plain in PERSONAL_TRAITS or any(word in plain for word in PERSONAL_WORDS)


def timestamp_micros(event: Event) -> int | None:
    ms = parse_ms(event.get("timestamp"))
    return None if ms is None else ms * 1000


# -- the destination -----------------------------------------------------------------------


class GoogleAnalytics4(Destination[GoogleAnalytics4Settings]):
    slug = "google_analytics_4"
    name = "Google Analytics 4 Cloud"
    category = Category.ANALYTICS
    description = (
        "Web analytics: events, page views and e-commerce in Google Analytics 4 (Measurement Protocol)."
    )
    Settings = GoogleAnalytics4Settings
    batching = Batching(max_events=MAX_EVENTS, max_bytes=MAX_BODY_BYTES, max_wait=1.0)
    default_rate_limit = 0.0
    dedupe_field = ""

    def track(self, event: Event, settings: GoogleAnalytics4Settings) -> Payload:
        properties = event.get("properties") or {}
        recommended = RECOMMENDED.get(event.get("event") or "")
        if recommended:
            name, params_of = recommended
            return self._event(event, settings, name, _clean(params_of(properties)))
        name = custom_event_name(str(event.get("event") or ""), lowercase=settings.lowercase_event_names)
        return self._event(event, settings, name, _custom_params(properties))

    def page(self, event: Event, settings: GoogleAnalytics4Settings) -> Payload:
        properties = event.get("properties") or {}
        context_page = (event.get("context") or {}).get("page") or {}
        params = {
            f"page_{key}": properties.get(source) or context_page.get(source)
            for key, source in (("location", "url"), ("referrer", "referrer"), ("title", "title"))
        }
        return self._event(event, settings, "page_view", _clean(params))

    def screen(self, event: Event, settings: GoogleAnalytics4Settings) -> Payload:
        screen_name = event.get("name") or (event.get("properties") or {}).get("name")
        return self._event(event, settings, "screen_view", _clean({"screen_name": screen_name}))

    def group(self, event: Event, settings: GoogleAnalytics4Settings) -> Payload:
        return self._event(event, settings, "join_group", _clean({"group_id": event.get("groupId")}))

    def identify(self, event: Event, settings: GoogleAnalytics4Settings) -> Payload:
        if not settings.send_identify:
            raise Skip("identify is not sent: the 'send identify' setting is off")
        properties = user_properties(event.get("traits") or {}, timestamp_micros(event))
        if not properties:
            raise Skip("identify has no trait GA4 can take as a user property")
        return self._event(event, settings, IDENTIFY_EVENT, {}, properties)

    def _event(
        self,
        event: Event,
        settings: GoogleAnalytics4Settings,
        name: str,
        params: Params,
        properties: dict[str, Params] | None = None,
    ) -> Payload:
        client_id, user_id = _identities(event, settings)
        ga4_event: Params = {
            "name": name,
            "params": dict(itertools.islice({**ENGAGEMENT, **params}.items(), MAX_PARAMS)),
        }
        micros = timestamp_micros(event)
        if micros is not None:
            ga4_event["timestamp_micros"] = micros
        body: Params = {"client_id": client_id, "event": ga4_event}
        if user_id:
            body["user_id"] = user_id
        if properties:
            body["user_properties"] = properties
        return Payload(_endpoint(client_id, user_id), body)

    def request(self, endpoint: str, bodies: list[Any], settings: GoogleAnalytics4Settings) -> Request:
        first = bodies[0]
        data: Params = {"client_id": first["client_id"]}
        if first.get("user_id"):
            data["user_id"] = first["user_id"]
        merged = _merge_user_properties(body.get("user_properties") or {} for body in bodies)
        if merged:
            data["user_properties"] = merged
        data["events"] = [body["event"] for body in bodies]
        return Request.json(collect_url(settings), data)


def collect_url(settings: GoogleAnalytics4Settings) -> str:
    host = base_url(settings, HOSTS[settings.region])
    query = urlencode({"measurement_id": settings.measurement_id.strip(), "api_secret": settings.api_secret})
    return f"{host}/mp/collect?{query}"


def _identities(event: Event, settings: GoogleAnalytics4Settings) -> tuple[str, str | None]:
    first, second = (
        CLIENT_ID_SOURCES if settings.client_id_source == "anonymousId" else CLIENT_ID_SOURCES[::-1]
    )
    client_id = event.get(first) or event.get(second)
    if not client_id:
        raise Skip("GA4 needs a client_id: the event has neither anonymousId nor userId")
    return str(client_id), event.get("userId") or None


def _endpoint(client_id: str, user_id: str | None) -> str:
    """client_id and user_id are request-level: events of different ones never share a request."""
    return "collect " + orjson.dumps([client_id, user_id]).decode()


def _merge_user_properties(batches: Iterable[dict[str, Params]]) -> dict[str, Params]:
    """The newest value of each user property among the request's identifies, at most 25."""
    merged: dict[str, Params] = {}
    for properties in batches:
        for name, entry in properties.items():
            known = merged.get(name)
            if known is None or entry.get("timestamp_micros", 0) >= known.get("timestamp_micros", 0):
                merged[name] = entry
    return dict(itertools.islice(merged.items(), MAX_USER_PROPERTIES))


destination = GoogleAnalytics4()
