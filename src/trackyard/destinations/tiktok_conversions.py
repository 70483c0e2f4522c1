"""TikTok Events API 2.0: web (or offline/CRM) conversion events for a pixel, identifiers hashed.

Wire contract and Segment's mappings: destinations-marketing.md §11 and appendix A.8.
The catalog name is Segment's, "TikTok Conversions".

Decisions (the open questions of §11 and appendix A.8):
* `POST https://business-api.tiktok.com/open_api/v1.3/event/track/` with the token in
  `Access-Token`, body `{"event_source", "event_source_id", "test_event_code"?,
  "data": [...]}`; event_source is a setting (web, offline or crm; `app` needs TikTok's
  app SDK fields) and event_source_id is the pixel code (or the offline/CRM event set
  id). No `partner_name`: it is for TikTok's registered partners, which we are not.
  TikTok has no regional hosts; `base_url` replaces the host.
* track → one event named by Segment's presets: Order Completed → CompletePayment,
  Checkout Started → InitiateCheckout, Product Added → AddToCart, Product Viewed →
  ViewContent, Product Clicked → ClickButton, Products Searched → Search, Product Added
  to Wishlist → AddToWishlist, Payment Info Entered → AddPaymentInfo, Order Placed →
  PlaceAnOrder, Signed Up → CompleteRegistration, Subscription Created → Subscribe,
  Form Submitted → SubmitForm, Callback Started → Contact, Download Link Clicked →
  Download. Any other track event is sent as a custom event under its own name. page →
  PageView. identify, group, alias and screen are not taken (no TikTok event for them).
* properties: contents ← products (or, for the single-product events, the properties
  themselves): price, quantity, content_category ← category, content_id ← product_id
  (else sku), content_name ← name, brand; currency (ISO 4217, else the event is skipped
  with the reason); value ← value, else revenue; query, order_id, shop_id, content_type
  when given. page ← {url: context.page.url (a page call's own properties.url first),
  referrer}, for web events only.
* user: external_id ← [sha256(lower-cased userId, else anonymousId)]; email ←
  [sha256(email)], phone ← [sha256(E.164 with "+")] (TikTok hashes the `+`, Meta does
  not); first_name, last_name, zip_code ← lower-case, whitespace removed, SHA-256;
  city, state, country ← lower-case letters and digits, not hashed. All from
  `context.traits`, reading camelCase (firstName, postalCode) as well as snake_case:
  Segment's defaults read only snake_case and so miss the Spec's own trait names, and
  we leave out empty strings where Segment sends them. ttclid ← properties.ttclid, else
  the `ttclid` query parameter of the page URL; ttp ← properties.ttp; ip ← context.ip;
  user_agent ← context.userAgent; locale ← context.locale. The shared `hashing` helpers
  do the normalising; a value already hashed is not hashed again.
* event_time ← the event's timestamp in unix seconds; event_id ← messageId, which TikTok
  deduplicates against the pixel's event_id; limited_data_use from its setting.
* Batches: up to 1,000 events per request (TikTok's limit; the "events per request"
  setting lowers it); 4 MB per request (TikTok states no byte limit; this bounds one
  request). TikTok answers for a request as a whole and names no event (§0.1:
  a failure is `code != 0` in an HTTP 200 body), so one refused event fails its batch:
  every event of the request gets the same verdict with TikTok's message.
* Responses: `code` 0 delivered; 40100 (rate limit) and 5xxxx (TikTok system errors),
  HTTP 429 and 5xx retried, after Retry-After or X-RateLimit-Reset when sent; every
  other code (40001 permission, 40002 invalid parameter, 40105 bad token, …) and other
  4xx give up with TikTok's message and request_id.
* Rate limit: 1,000 requests/s, the Events API's documented QPS for an app on the basic
  tier; 40100 answers pace us further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

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

API_URL = "https://business-api.tiktok.com"
TRACK_PATH = "/open_api/v1.3/event/track/"
MAX_EVENTS = 1000
MAX_REQUEST_BYTES = 4_000_000
RATE_LIMIT_CODE = 40100
EVENT_SOURCES = ("web", "offline", "crm")
EVENT_NAMES = {
    "Order Completed": "CompletePayment",
    "Checkout Started": "InitiateCheckout",
    "Product Added": "AddToCart",
    "Product Viewed": "ViewContent",
    "Product Clicked": "ClickButton",
    "Products Searched": "Search",
    "Product Added to Wishlist": "AddToWishlist",
    "Payment Info Entered": "AddPaymentInfo",
    "Order Placed": "PlaceAnOrder",
    "Signed Up": "CompleteRegistration",
    "Subscription Created": "Subscribe",
    "Form Submitted": "SubmitForm",
    "Callback Started": "Contact",
    "Download Link Clicked": "Download",
}
SINGLE_PRODUCT_EVENTS = frozenset(
    {"Product Added", "Product Viewed", "Product Clicked", "Product Added to Wishlist"}
)
PASSED_PROPERTIES = ("query", "order_id", "shop_id", "content_type")


@dataclass(frozen=True, kw_only=True)
class TikTokConversionsSettings(HTTPSettings):
    access_token: str = setting(
        label="Access token",
        secret=True,
        help="Events Manager → your pixel → Settings → Events API → Generate access token.",
    )
    pixel_code: str = setting(
        label="Pixel code",
        help="Events Manager → your pixel's ID (for offline or CRM events, the event set ID).",
    )
    event_source: str = setting(
        label="Event source", default="web", choices=EVENT_SOURCES, help="Where the events come from."
    )
    test_event_code: str | None = setting(
        label="Test event code",
        default=None,
        help="Events Manager → Test events: events then show there only.",
    )
    limited_data_use: bool = setting(
        label="Limited data use",
        default=False,
        help="Ask TikTok to process the events under its limited data use terms.",
    )
    phone_country_code: str | None = setting(
        label="Default phone country code",
        default=None,
        help="Calling code for phone numbers written without one (1 for the US, 44 for the UK).",
    )
    batch_size: int = setting(
        label="Events per request",
        default=MAX_EVENTS,
        help="At most 1,000. TikTok refuses a whole request for one bad event; smaller batches lose less.",
    )

    def __post_init__(self) -> None:
        check_phone_country_code(self.phone_country_code, "tiktok_conversions")
        if not 1 <= self.batch_size <= MAX_EVENTS:
            raise SettingsError(
                f"tiktok_conversions: setting 'batch_size' must be between 1 and {MAX_EVENTS}; got {self.batch_size}"
            )


class TikTokConversions(Destination[TikTokConversionsSettings]):
    slug = "tiktok_conversions"
    name = "TikTok Conversions"
    category = Category.ADVERTISING
    description = "Send conversion events to TikTok's Events API with hashed identifiers."
    Settings = TikTokConversionsSettings
    batching = Batching(max_events=MAX_EVENTS, max_bytes=MAX_REQUEST_BYTES, max_wait=1.0)
    default_rate_limit = 1000.0
    dedupe_field = "event_id"

    def batching_policy(self, settings: TikTokConversionsSettings) -> Batching:
        return Batching(max_events=settings.batch_size, max_bytes=MAX_REQUEST_BYTES, max_wait=1.0)

    def track(self, event: Event, settings: TikTokConversionsSettings) -> Payload:
        name = event.get("event")
        if not isinstance(name, str) or not name:
            raise Skip("track has no event name")
        properties = _mapping(event.get("properties"))
        products = [properties] if name in SINGLE_PRODUCT_EVENTS else _products(properties)
        return _event(event, settings, EVENT_NAMES.get(name, name), _properties(properties, products), None)

    def page(self, event: Event, settings: TikTokConversionsSettings) -> Payload:
        url = _mapping(event.get("properties")).get("url")
        return _event(event, settings, "PageView", {}, url)

    def request(self, endpoint: str, bodies: list[Any], settings: TikTokConversionsSettings) -> Request:
        data: dict[str, Any] = {
            "event_source": settings.event_source,
            "event_source_id": settings.pixel_code.strip(),
            "data": bodies,
        }
        if settings.test_event_code:
            data["test_event_code"] = settings.test_event_code
        url = base_url(settings, API_URL) + TRACK_PATH
        return Request.json(url, data, {"Access-Token": settings.access_token.strip()})

    def classify(self, response: Response, request: Request, count: int) -> Outcome:
        body = response.json()
        code = body.get("code") if isinstance(body, dict) else None
        if not 200 <= response.status < 300 or code is None:
            if response.status == 429:
                return Outcome.retry(
                    f"HTTP 429: {response.text[:200]}", retry_after_seconds(response.headers)
                )
            return classify_status(response)
        if code == 0:
            return Outcome.delivered(f"HTTP {response.status}: code 0")
        reason = f"TikTok code {code}: {body.get('message', '')} (request_id {body.get('request_id')})"
        if code == RATE_LIMIT_CODE:
            return Outcome.retry(reason, retry_after_seconds(response.headers))
        if isinstance(code, int) and code >= 50000:
            return Outcome.retry(reason)
        return Outcome.give_up(reason)


def _event(
    event: Event,
    settings: TikTokConversionsSettings,
    name: str,
    properties: dict[str, Any],
    page_url: Any,
) -> Payload:
    ms = parse_ms(event.get("timestamp"))
    if ms is None:
        raise Skip("the event has no timestamp to send as event_time")
    body: dict[str, Any] = {"event": name, "event_time": ms // 1000}
    if event.get("messageId"):
        body["event_id"] = str(event["messageId"])
    body["user"] = _user(event, settings)
    if properties:
        body["properties"] = properties
    if settings.event_source == "web":
        page = _page(event, page_url)
        if page:
            body["page"] = page
    body["limited_data_use"] = settings.limited_data_use
    return Payload("events", body)


def _user(event: Event, settings: TikTokConversionsSettings) -> dict[str, Any]:
    context = _mapping(event.get("context"))
    traits = _mapping(context.get("traits"))
    address = _mapping(traits.get("address"))
    properties = _mapping(event.get("properties"))
    fields: dict[str, Any] = {
        "external_id": hashing.hash_external_id(event.get("userId") or event.get("anonymousId")),
        "email": hashing.hash_email(traits.get("email")),
        "phone": hashing.hash_phone_e164(traits.get("phone"), settings.phone_country_code),
    }
    user = {key: [value] for key, value in fields.items() if value}
    more = {
        "first_name": hashing.hash_compact(traits.get("firstName") or traits.get("first_name")),
        "last_name": hashing.hash_compact(traits.get("lastName") or traits.get("last_name")),
        "zip_code": hashing.hash_compact(address.get("postalCode") or address.get("postal_code")),
        "city": hashing.normalize_alphanumeric(address.get("city")),
        "state": hashing.normalize_alphanumeric(address.get("state")),
        "country": hashing.normalize_alphanumeric(address.get("country")),
        "ttclid": properties.get("ttclid") or _query_parameter(_page_url(event), "ttclid"),
        "ttp": properties.get("ttp"),
        "ip": context.get("ip"),
        "user_agent": context.get("userAgent"),
        "locale": context.get("locale"),
    }
    user.update({key: value for key, value in more.items() if value})
    if not user:
        raise Skip("TikTok needs something to match the person on; this event has no identifier")
    return user


def _properties(properties: dict[str, Any], products: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    contents = [content for content in map(_content, products) if content]
    if contents:
        result["contents"] = contents
    currency = _currency(properties.get("currency"))
    if currency:
        result["currency"] = currency
    value = next((properties[key] for key in ("value", "revenue") if _is_number(properties.get(key))), None)
    if value is not None:
        result["value"] = value
    result.update(
        {key: properties[key] for key in PASSED_PROPERTIES if properties.get(key) not in (None, "")}
    )
    return result


def _content(product: dict[str, Any]) -> dict[str, Any]:
    fields = {
        "price": product.get("price") if _is_number(product.get("price")) else None,
        "quantity": product.get("quantity") if _is_number(product.get("quantity")) else None,
        "content_category": product.get("category"),
        "content_id": product.get("product_id") or product.get("sku"),
        "content_name": product.get("name"),
        "brand": product.get("brand"),
    }
    return {key: value for key, value in fields.items() if value not in (None, "")}


def _page(event: Event, page_url: Any) -> dict[str, Any]:
    page = _mapping(_mapping(event.get("context")).get("page"))
    fields = {"url": page_url or page.get("url"), "referrer": page.get("referrer")}
    return {key: value for key, value in fields.items() if value}


def _currency(value: Any) -> str | None:
    if value in (None, ""):
        return None
    code = str(value).strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise Skip(f"currency {value!r} is not an ISO 4217 code")
    return code


def _query_parameter(url: Any, name: str) -> str | None:
    if not isinstance(url, str):
        return None
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def _products(properties: dict[str, Any]) -> list[dict[str, Any]]:
    products = properties.get("products")
    return (
        [product for product in products if isinstance(product, dict)] if isinstance(products, list) else []
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _page_url(event: Event) -> Any:
    return _mapping(_mapping(event.get("context")).get("page")).get("url")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = TikTokConversions()
