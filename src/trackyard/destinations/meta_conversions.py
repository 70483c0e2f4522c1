"""Meta (Facebook) Conversions API: server events for the pixel, user data hashed field by field.

Wire contract and Segment's mappings: destinations-marketing.md §9, appendix A.7 and B.
The catalog name is Segment's, "Facebook Conversions API (Actions)".

Decisions (the open questions of §9 and appendix C.4):
* `POST https://graph.facebook.com/{api version}/{pixel id}/events` with a JSON body
  `{"data": [...], "test_event_code"?}` and the token in `Authorization: Bearer` (as
  Segment sends it; the SDK's `?access_token=` would put the secret in URLs and logs).
  The Graph API version is a setting (default v24.0, Segment's pin). Meta has no
  regional hosts; `base_url` replaces graph.facebook.com.
* track → a server event: Order Completed → Purchase, Checkout Started →
  InitiateCheckout, Payment Info Entered → AddPaymentInfo (custom_data value ←
  revenue, else value, else total; currency; contents ← products), Product Viewed and
  Product List Viewed → ViewContent, Product Added → AddToCart, Product Added to Wishlist
  → AddToWishlist (value ← price; contents and content_ids ← the product, or the list's
  products), Products Searched → Search (search_string ← query). Other events keep their
  name as custom events (at most 50 characters) with their properties as custom_data,
  less the keys consumed here and personal data (email, phone, first and last name,
  gender, birthday, address, ip), which Meta forbids in custom_data. page → PageView
  without custom_data. identify, group, alias and screen are not taken: Meta has no such
  events (app events go through Meta's app SDKs, which need `app_data` we cannot fill).
* Purchase needs a currency (ISO 4217) and a value: without them the event is skipped
  with the reason (Segment's Actions destination refuses them too; we do not invent USD
  as the classic destination did). A currency that is not three letters skips the event.
* event_time: the event's `timestamp` in integer unix seconds (appendix C.4: we never
  send ISO strings). event_id ← messageId, the id Segment's browser pixel uses, so Meta
  deduplicates server and browser copies. action_source ← `properties.action_source`
  when valid, else the setting (default website); `app` is not offered (see above).
* Events older than 7 days are skipped here with their age as the reason: Meta refuses a
  whole request for one such event (subcode 2804003). An event that crosses the 7 days
  while it is being retried is caught in `classify`: when Meta answers 2804003, the
  events of the request that are now too old give up and the others are retried.
* website events need `client_user_agent` (context.userAgent) and `event_source_url`
  (the page's URL); without them the event is skipped rather than rejected by Meta.
* user_data, from `context.traits` (and address): em, ph, fn, ln, ge, db, ct, st, zp,
  country hashed by the shared `hashing` helpers (Meta's normalisation: see there);
  external_id ← [sha256(userId, else anonymousId)], lower-cased first as Segment and the
  pixel do. Sent in clear, never hashed: client_ip_address ← context.ip,
  client_user_agent ← context.userAgent, fbc ← properties.fbc (else built from the
  page URL's `fbclid` as Meta documents: `fb.1.{event time ms}.{fbclid}`), fbp ←
  properties.fbp. Phones written without a country code get the "default phone country
  code" setting when set. `country` is sent although Segment does not default it. A
  value that cannot be normalised (an email without a domain) is left out, not hashed;
  an event left with no customer information at all is skipped with the reason.
* Batches: up to 1,000 events per request (Meta's limit; the "events per request"
  setting lowers it, since Meta answers for the whole request and one bad event fails
  its batch; Meta reports no per-event errors, §0.1). 4 MB per request: Meta
  documents no byte limit, this bounds one request.
* Responses: 200 `{"events_received"}` delivered. Graph errors `{"error": {code,
  error_subcode, is_transient, error_user_msg…}}`: codes 1, 2, 341, 368, 5000,
  `is_transient` and HTTP 5xx are retried; 4, 17, 32, 613 and HTTP 429 are throttling,
  retried after `X-Business-Use-Case-Usage` `estimated_time_to_regain_access` (minutes)
  or Retry-After; subcode 2804003 as above; every other error (100 invalid parameter,
  190 bad token, …) gives up with Meta's message.
* Rate limit: Meta publishes none for the Conversions API (it is not subject to the
  Marketing API quota); the throttling answers above pace us instead (0 = none).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from trackyard.destinations import hashing
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
from trackyard.destinations.hashing import check_phone_country_code
from trackyard.spec.timestamps import parse_ms

GRAPH_URL = "https://graph.facebook.com"
MAX_EVENTS = 1000
MAX_REQUEST_BYTES = 4_000_000
MAX_EVENT_AGE_S = 7 * 24 * 3600
MAX_CUSTOM_EVENT_NAME = 50
STALE_EVENT_SUBCODE = 2804003
RETRYABLE_CODES = frozenset({1, 2, 341, 368, 5000})
THROTTLE_CODES = frozenset({4, 17, 32, 613})

ACTION_SOURCES = (
    "website",
    "email",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
)
ORDER_EVENTS = {
    "Order Completed": "Purchase",
    "Checkout Started": "InitiateCheckout",
    "Payment Info Entered": "AddPaymentInfo",
}
PRODUCT_EVENTS = {
    "Product Viewed": "ViewContent",
    "Product Added": "AddToCart",
    "Product Added to Wishlist": "AddToWishlist",
}
LIST_EVENTS = {"Product List Viewed": "ViewContent"}
# Consumed by the server event itself, or personal data Meta forbids in custom_data.
NOT_CUSTOM_DATA = frozenset(
    {"action_source", "actionSource", "fbc", "fbp", "email", "phone", "firstName", "first_name"}
    | {"lastName", "last_name", "gender", "birthday", "address", "ip"}
)
_API_VERSION = re.compile(r"^v\d+\.\d+$")


@dataclass(frozen=True, kw_only=True)
class MetaConversionsSettings(HTTPSettings):
    pixel_id: str = setting(
        label="Pixel or dataset ID", help="Events Manager → Data sources → your pixel → Settings."
    )
    access_token: str = setting(
        label="Access token",
        secret=True,
        help="Events Manager → your pixel → Settings → Conversions API → Generate access token.",
    )
    api_version: str = setting(label="Graph API version", default="v24.0", help="Such as v24.0.")
    action_source: str = setting(
        label="Action source",
        default="website",
        choices=ACTION_SOURCES,
        help="Where the conversions happen; an event's properties.action_source overrides it.",
    )
    test_event_code: str | None = setting(
        label="Test event code",
        default=None,
        help="Events Manager → Test events: events then show there, and not in your reports.",
    )
    phone_country_code: str | None = setting(
        label="Default phone country code",
        default=None,
        help="Calling code for phone numbers written without one (1 for the US, 44 for the UK).",
    )
    batch_size: int = setting(
        label="Events per request",
        default=MAX_EVENTS,
        help="At most 1,000. Meta refuses a whole request for one bad event; smaller batches lose less.",
    )

    def __post_init__(self) -> None:
        if not self.pixel_id.strip().isdigit():
            raise SettingsError(f"meta_conversions: setting 'pixel_id' must be digits; got {self.pixel_id!r}")
        if not _API_VERSION.match(self.api_version):
            raise SettingsError(
                f"meta_conversions: setting 'api_version' must look like v24.0; got {self.api_version!r}"
            )
        check_phone_country_code(self.phone_country_code, "meta_conversions")
        if not 1 <= self.batch_size <= MAX_EVENTS:
            raise SettingsError(
                f"meta_conversions: setting 'batch_size' must be between 1 and {MAX_EVENTS}; got {self.batch_size}"
            )


class MetaConversions(Destination[MetaConversionsSettings]):
    slug = "meta_conversions"
    name = "Facebook Conversions API (Actions)"
    category = Category.ADVERTISING
    description = "Send conversions to Meta's Conversions API with hashed customer information."
    Settings = MetaConversionsSettings
    batching = Batching(max_events=MAX_EVENTS, max_bytes=MAX_REQUEST_BYTES, max_wait=1.0)
    default_rate_limit = 0.0
    dedupe_field = "event_id"

    def batching_policy(self, settings: MetaConversionsSettings) -> Batching:
        return Batching(max_events=settings.batch_size, max_bytes=MAX_REQUEST_BYTES, max_wait=1.0)

    def track(self, event: Event, settings: MetaConversionsSettings) -> Payload:
        name = event.get("event")
        if not isinstance(name, str) or not name:
            raise Skip("track has no event name")
        properties = _mapping(event.get("properties"))
        event_name, custom_data = _standard_event(name, properties)
        return _server_event(event, settings, event_name, _page_url(event), custom_data)

    def page(self, event: Event, settings: MetaConversionsSettings) -> Payload:
        url = _mapping(event.get("properties")).get("url") or _page_url(event)
        return _server_event(event, settings, "PageView", url, None)

    def request(self, endpoint: str, bodies: list[Any], settings: MetaConversionsSettings) -> Request:
        url = f"{base_url(settings, GRAPH_URL)}/{settings.api_version}/{settings.pixel_id.strip()}/events"
        data: dict[str, Any] = {"data": bodies}
        if settings.test_event_code:
            data["test_event_code"] = settings.test_event_code
        return Request.json(url, data, {"Authorization": f"Bearer {settings.access_token.strip()}"})

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        error = graph_error(response)
        status = response.status
        if error is None:
            if 200 <= status < 300:
                body = response.json()
                received = body.get("events_received") if isinstance(body, dict) else None
                return Outcome.delivered(f"HTTP {status}: {received} events received")
            if status == 429:
                return Outcome.retry(f"HTTP 429: {response.text[:200]}", throttle_delay(response))
            return classify_status(response)
        code, subcode = error.get("code"), error.get("error_subcode")
        reason = f"HTTP {status}: Meta error {code}" + (f"/{subcode}" if subcode else "")
        reason += f": {error.get('error_user_msg') or error.get('message') or ''}".rstrip(": ")
        if code in THROTTLE_CODES or status == 429:
            return Outcome.retry(reason, throttle_delay(response))
        if code in RETRYABLE_CODES or error.get("is_transient") is True or status >= 500:
            return Outcome.retry(reason)
        if subcode == STALE_EVENT_SUBCODE:
            return stale_event_outcomes(request, count, reason)
        return Outcome.give_up(reason)


# -- translation ---------------------------------------------------------------------------


def _server_event(
    event: Event,
    settings: MetaConversionsSettings,
    event_name: str,
    url: Any,
    custom_data: dict[str, Any] | None,
) -> Payload:
    event_time = _event_time(event)
    source = _action_source(event, settings)
    user_data = _user_data(event, settings, event_time)
    if source == "website":
        if not user_data.get("client_user_agent"):
            raise Skip("website events need the browser's user agent (context.userAgent); this one has none")
        if not url:
            raise Skip("website events need the page URL (context.page.url); this one has none")
    body: dict[str, Any] = {
        "event_name": event_name,
        "event_time": event_time,
        "action_source": source,
        "user_data": user_data,
    }
    if event.get("messageId"):
        body["event_id"] = str(event["messageId"])
    if url:
        body["event_source_url"] = str(url)
    if custom_data:
        body["custom_data"] = custom_data
    return Payload("events", body)


def _event_time(event: Event) -> int:
    ms = parse_ms(event.get("timestamp"))
    if ms is None:
        raise Skip("the event has no timestamp to send as event_time")
    seconds = ms // 1000
    age = time.time() - seconds
    if age > MAX_EVENT_AGE_S:
        raise Skip(
            f"the event is {age / 86400:.1f} days old; Meta refuses events older than 7 days "
            "(and would fail the whole request with it)"
        )
    return seconds


def _action_source(event: Event, settings: MetaConversionsSettings) -> str:
    properties = _mapping(event.get("properties"))
    chosen = properties.get("action_source") or properties.get("actionSource")
    if chosen is None:
        return settings.action_source
    if chosen not in ACTION_SOURCES:
        raise Skip(f"properties.action_source {chosen!r} is not one of {', '.join(ACTION_SOURCES)}")
    return str(chosen)


def _user_data(event: Event, settings: MetaConversionsSettings, event_time: int) -> dict[str, Any]:
    context = _mapping(event.get("context"))
    traits = _mapping(context.get("traits"))
    address = _mapping(traits.get("address"))
    properties = _mapping(event.get("properties"))
    external_id = hashing.hash_external_id(event.get("userId") or event.get("anonymousId"))
    country = address.get("country")
    fields: dict[str, Any] = {
        "em": hashing.hash_email(traits.get("email")),
        "ph": hashing.hash_phone(traits.get("phone"), settings.phone_country_code),
        "fn": hashing.hash_name(traits.get("firstName") or traits.get("first_name")),
        "ln": hashing.hash_name(traits.get("lastName") or traits.get("last_name")),
        "ge": hashing.hash_gender(traits.get("gender")),
        "db": hashing.hash_date_of_birth(traits.get("birthday")),
        "ct": hashing.hash_city(address.get("city")),
        "st": hashing.hash_state(address.get("state")),
        "zp": hashing.hash_zip(address.get("postalCode") or address.get("postal_code"), country),
        "country": hashing.hash_country(country),
        "external_id": [external_id] if external_id else None,
        "client_ip_address": context.get("ip"),
        "client_user_agent": context.get("userAgent"),
        "fbc": properties.get("fbc") or _fbc_from_click_id(_page_url(event), event_time),
        "fbp": properties.get("fbp"),
    }
    user_data = {key: value for key, value in fields.items() if value}
    if not user_data:
        raise Skip("Meta needs at least one customer information parameter; this event has none")
    return user_data


def _fbc_from_click_id(url: Any, event_time: int) -> str | None:
    """Meta's documented fbc format, built from the `fbclid` of the page URL when there is one."""
    if not isinstance(url, str):
        return None
    click_ids = parse_qs(urlsplit(url).query).get("fbclid")
    return f"fb.1.{event_time * 1000}.{click_ids[0]}" if click_ids else None


def _standard_event(name: str, properties: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """Meta's event name for a Segment event, with its custom_data."""
    if name in ORDER_EVENTS:
        return ORDER_EVENTS[name], _order_data(ORDER_EVENTS[name], properties)
    if name in PRODUCT_EVENTS:
        return PRODUCT_EVENTS[name], _product_data(properties, [properties])
    if name in LIST_EVENTS:
        return LIST_EVENTS[name], _product_data(properties, _products(properties))
    if name == "Products Searched":
        query = properties.get("query")
        return "Search", {"search_string": str(query)} if query not in (None, "") else None
    if len(name) > MAX_CUSTOM_EVENT_NAME:
        raise Skip(
            f"Meta custom event names have at most {MAX_CUSTOM_EVENT_NAME} characters; {name!r} has more"
        )
    custom = {key: value for key, value in properties.items() if key not in NOT_CUSTOM_DATA}
    return name, custom or None


def _order_data(event_name: str, properties: dict[str, Any]) -> dict[str, Any]:
    value = next(
        (
            number
            for key in ("revenue", "value", "total")
            if (number := _number(properties.get(key))) is not None
        ),
        None,
    )
    currency = _currency(properties.get("currency"))
    if event_name == "Purchase" and (currency is None or value is None):
        raise Skip(
            "Meta requires a currency (properties.currency) and a value (properties.revenue) for Purchase"
        )
    data: dict[str, Any] = {
        "currency": currency,
        "value": value,
        "contents": _contents(_products(properties)),
    }
    return {key: item for key, item in data.items() if item not in (None, [])}


def _product_data(properties: dict[str, Any], products: list[dict[str, Any]]) -> dict[str, Any]:
    contents = _contents(products)
    data: dict[str, Any] = {
        "currency": _currency(properties.get("currency")),
        "value": _number(properties.get("price")),
        "content_ids": [content["id"] for content in contents],
        "contents": contents,
    }
    return {key: item for key, item in data.items() if item not in (None, [])}


def _contents(products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    contents = []
    for product in products:
        product_id = product.get("product_id") or product.get("sku")
        if not product_id:
            continue
        content: dict[str, Any] = {"id": str(product_id)}
        quantity = _number(product.get("quantity"))
        price = _number(product.get("price"))
        if quantity is not None:
            content["quantity"] = int(quantity)
        if price is not None:
            content["item_price"] = price
        contents.append(content)
    return contents


def _products(properties: dict[str, Any]) -> list[dict[str, Any]]:
    products = properties.get("products")
    return (
        [product for product in products if isinstance(product, dict)] if isinstance(products, list) else []
    )


def _currency(value: Any) -> str | None:
    if value in (None, ""):
        return None
    code = str(value).strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise Skip(f"currency {value!r} is not an ISO 4217 code")
    return code


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _page_url(event: Event) -> Any:
    return _mapping(_mapping(event.get("context")).get("page")).get("url")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- responses -----------------------------------------------------------------------------


def graph_error(response: Response) -> dict[str, Any] | None:
    """The Graph API's `error` object of a response, when it has one."""
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def throttle_delay(response: Response) -> float | None:
    """Seconds until Meta restores access: the longest `estimated_time_to_regain_access`
    (minutes) of `X-Business-Use-Case-Usage`, else Retry-After."""
    minutes = [0.0]
    try:
        usage = orjson.loads(response.headers.get("x-business-use-case-usage") or "{}")
    except orjson.JSONDecodeError:
        usage = {}
    for entries in usage.values() if isinstance(usage, Mapping) else []:
        for entry in entries if isinstance(entries, list) else []:
            wait = entry.get("estimated_time_to_regain_access") if isinstance(entry, Mapping) else None
            if isinstance(wait, int | float) and not isinstance(wait, bool):
                minutes.append(float(wait))
    if max(minutes) > 0:
        return max(minutes) * 60
    return retry_after_seconds(response.headers)


def stale_event_outcomes(request: Request, count: int, reason: str) -> list[Outcome]:
    """After Meta's "event too old" answer: the events of the request now older than 7 days
    give up, the others were refused only because of them and are retried."""
    now = time.time()
    data = orjson.loads(request.body).get("data", [])
    times = [body.get("event_time") if isinstance(body, dict) else None for body in data][:count]
    stale = {
        index
        for index, seconds in enumerate(times)
        if isinstance(seconds, int | float) and now - seconds > MAX_EVENT_AGE_S
    }
    if not stale:
        return [Outcome.give_up(reason)] * count
    return [
        Outcome.give_up(f"{reason} (this event is older than 7 days)")
        if index in stale
        else Outcome.retry(f"{reason} (refused with the batch because of an older event)")
        for index in range(count)
    ]


destination = MetaConversions()
