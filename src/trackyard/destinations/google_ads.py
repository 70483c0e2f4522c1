"""Google Ads: offline click conversions, with enhanced-conversion identifiers hashed.

Wire contract and Segment's mappings: destinations-marketing.md §10 (AD:google-enhanced-
conversions, "Upload Click Conversion"). The catalog name is Segment's, "Google Ads
Conversions".

Decisions (the open questions of §10):
* `POST https://googleads.googleapis.com/{api version}/customers/{customer id}:uploadClickConversions`
  with `{"conversions": [...], "partialFailure": true}` (REST, as Segment; Google's Python
  SDK speaks gRPC and is no HTTP oracle). Headers: `Authorization: Bearer <OAuth access
  token>`, `developer-token`, and `login-customer-id` when a manager account acts for
  the customer. The API version is a setting (default v22, Segment's). The access token
  is a setting: refreshing it needs an OAuth exchange that a pure destination cannot
  make, so an expired token (401) dead-letters the events, which are re-sent with
  `trackyard destination retry` once the token is replaced.
* Which events are conversions: the "conversion actions" setting maps Segment event
  names to conversion action IDs (`Order Completed: 123456789`); each such track event
  becomes one click conversion of `customers/{customer}/conversionActions/{id}`. Other
  track events and every other call are skipped with the reason (Segment's action has
  no default subscription either).
* Click conversion: conversionDateTime ← the event's timestamp as `yyyy-mm-dd
  hh:mm:ss+00:00` (UTC, fraction dropped, as Segment formats it); gclid, gbraid or
  wbraid (the first present; Google takes only one) ← properties, else the query of the
  page URL where Google put them; orderId ← properties.order_id (or orderId);
  conversionValue ← properties.total, else revenue, else value (Segment's default is
  total) with currencyCode ← currency; consent.adUserData ← the "ad user data consent"
  setting when it is set. Cart data is not sent: it needs a Merchant Center feed.
* userIdentifiers (enhanced conversions for leads): hashedEmail ← context.traits.email
  (or properties.email), trimmed, lower-cased and, for gmail.com and googlemail.com,
  without any dot in the local part (Google's rule; Segment removes only the first);
  hashedPhoneNumber ← the phone in E.164 (`+` and digits) then SHA-256. Google takes only
  email and phone for click conversions, so names and address are not sent.
* Identifier rule: a conversion needs a click id or a hashed email or phone; without
  any, the event is skipped with the reason. Conversions more than 90 days old (Google's
  longest click-through window) are skipped too.
* Batches: up to 2,000 conversions per request (TOO_MANY_CONVERSIONS_IN_REQUEST beyond);
  4 MB per request, below the 10 MB Google's REST front end takes.
* Responses: 200 without `partialFailureError` delivered. With it, each error's
  location (`conversions[i]`) names a failed row: that row gives up with Google's error
  code and message, every other row is delivered; CLICK_CONVERSION_ALREADY_EXISTS means
  a copy we sent before was recorded (at-least-once re-sends), so it counts as
  delivered; TOO_RECENT_EVENT and TOO_RECENT_CONVERSION_ACTION ("retry in 6 hours") are
  retried. A 400 whose errors name rows gives those up and retries the others; 429 and
  RESOURCE_EXHAUSTED are retried after the quota error's `retryDelay` or Retry-After;
  5xx, UNAVAILABLE and DEADLINE_EXCEEDED are retried; other errors (401, 403, 400
  naming no row) give up with Google's message.
* Rate limit: Google publishes daily operation quotas per developer token, not a rate
  per second; RESOURCE_EXHAUSTED answers pace us (0 = none).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from trackyard.destinations import hashing
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

API_URL = "https://googleads.googleapis.com"
MAX_CONVERSIONS = 2000
MAX_REQUEST_BYTES = 4_000_000
MAX_CONVERSION_AGE_S = 90 * 24 * 3600
CLICK_IDS = ("gclid", "gbraid", "wbraid")
CONSENTS = ("unspecified", "granted", "denied")
ALREADY_RECORDED = frozenset({"CLICK_CONVERSION_ALREADY_EXISTS"})
TOO_RECENT = frozenset({"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"})
TOO_RECENT_WAIT_S = 6 * 3600
RETRYABLE_RPC_STATUSES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"})
_API_VERSION = re.compile(r"^v\d+$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _digits(value: str) -> str:
    return value.replace("-", "").strip()


@dataclass(frozen=True, kw_only=True)
class GoogleAdsSettings(HTTPSettings):
    customer_id: str = setting(
        label="Customer ID", help="The Google Ads account the conversions belong to, such as 123-456-7890."
    )
    conversion_actions: dict[str, str] = setting(
        label="Conversion actions",
        help="Segment event name → conversion action ID ('Order Completed: 123456789'; "
        "Goals → Conversions → the action's ctId).",
    )
    developer_token: str = setting(
        label="Developer token", secret=True, help="Google Ads → Tools → API Center → Developer token."
    )
    access_token: str = setting(
        label="OAuth access token",
        secret=True,
        help="An OAuth 2.0 access token with the https://www.googleapis.com/auth/adwords scope.",
    )
    login_customer_id: str | None = setting(
        label="Login customer ID",
        default=None,
        help="The manager account's ID when access comes through a manager account.",
    )
    api_version: str = setting(label="Google Ads API version", default="v22", help="Such as v22.")
    ad_user_data_consent: str = setting(
        label="Ad user data consent",
        default="unspecified",
        choices=CONSENTS,
        help="Sent as consent.adUserData with every conversion (required for users in the EEA).",
    )
    phone_country_code: str | None = setting(
        label="Default phone country code",
        default=None,
        help="Calling code for phone numbers written without one (1 for the US, 44 for the UK).",
    )

    def __post_init__(self) -> None:
        where = "google_ads: setting"
        for name in ("customer_id", "login_customer_id"):
            value = getattr(self, name)
            if value is not None and not (_digits(value).isdigit() and len(_digits(value)) == 10):
                raise SettingsError(f"{where} {name!r} must be a 10-digit customer ID; got {value!r}")
        if not self.conversion_actions:
            raise SettingsError(f"{where} 'conversion_actions' must map at least one event to an action ID")
        for event_name, action in self.conversion_actions.items():
            if not str(action).strip().isdigit():
                raise SettingsError(
                    f"{where} 'conversion_actions' maps {event_name!r} to {action!r}; expected a numeric action ID"
                )
        if not _API_VERSION.match(self.api_version):
            raise SettingsError(f"{where} 'api_version' must look like v22; got {self.api_version!r}")
        code = self.phone_country_code
        if code is not None and not (code.lstrip("+").isdigit() and len(code.lstrip("+")) <= 3):
            raise SettingsError(f"{where} 'phone_country_code' must be 1 to 3 digits; got {code!r}")


class GoogleAds(Destination[GoogleAdsSettings]):
    slug = "google_ads"
    name = "Google Ads Conversions"
    category = Category.ADVERTISING
    description = "Upload offline click conversions and enhanced-conversion identifiers to Google Ads."
    Settings = GoogleAdsSettings
    batching = Batching(max_events=MAX_CONVERSIONS, max_bytes=MAX_REQUEST_BYTES, max_wait=1.0)
    default_rate_limit = 0.0
    dedupe_field = ""  # Google deduplicates a click conversion by its click and conversionDateTime

    def track(self, event: Event, settings: GoogleAdsSettings) -> Payload:
        name = event.get("event")
        action = settings.conversion_actions.get(name) if isinstance(name, str) else None
        if action is None:
            raise Skip(f"{name!r} is not a conversion: the 'conversion_actions' setting does not map it")
        customer = _digits(settings.customer_id)
        properties = _mapping(event.get("properties"))
        conversion: dict[str, Any] = {
            "conversionAction": f"customers/{customer}/conversionActions/{str(action).strip()}",
            "conversionDateTime": _conversion_date_time(event),
        }
        conversion.update(_click_id(event, properties))
        identifiers = _user_identifiers(event, properties, settings)
        if not identifiers and not any(key in conversion for key in CLICK_IDS):
            raise Skip("a conversion needs a gclid, gbraid or wbraid, or an email or phone to match on")
        if identifiers:
            conversion["userIdentifiers"] = identifiers
        conversion.update(_order_fields(properties))
        if settings.ad_user_data_consent != "unspecified":
            conversion["consent"] = {"adUserData": settings.ad_user_data_consent.upper()}
        return Payload("uploadClickConversions", conversion)

    def request(self, endpoint: str, bodies: list[Any], settings: GoogleAdsSettings) -> Request:
        customer = _digits(settings.customer_id)
        url = f"{base_url(settings, API_URL)}/{settings.api_version}/customers/{customer}:{endpoint}"
        headers = {
            "Authorization": f"Bearer {settings.access_token.strip()}",
            "developer-token": settings.developer_token.strip(),
        }
        if settings.login_customer_id:
            headers["login-customer-id"] = _digits(settings.login_customer_id)
        return Request.json(url, {"conversions": bodies, "partialFailure": True}, headers)

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        body = response.json()
        body = body if isinstance(body, dict) else {}
        status = response.status
        if 200 <= status < 300:
            failure = body.get("partialFailureError")
            if not isinstance(failure, Mapping) or not failure.get("code"):
                return Outcome.delivered(f"HTTP {status}")
            return _partial_failure_outcomes(failure, count, f"HTTP {status}")
        error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
        reason = f"HTTP {status} {error.get('status', '')}: {error.get('message') or response.text[:200]}"
        if status in RETRYABLE_STATUSES or status >= 500 or error.get("status") in RETRYABLE_RPC_STATUSES:
            return Outcome.retry(reason, _retry_delay(error) or retry_after_seconds(response.headers))
        rows = _failed_rows(error, count)
        if not rows:
            return Outcome.give_up(reason)
        return [
            Outcome.give_up(f"HTTP {status}: {rows[index]}")
            if index in rows
            else Outcome.retry(f"{reason} (refused with the batch because of other conversions)")
            for index in range(count)
        ]


# -- translation ---------------------------------------------------------------------------


def _conversion_date_time(event: Event) -> str:
    ms = parse_ms(event.get("timestamp"))
    if ms is None:
        raise Skip("the event has no timestamp to send as conversionDateTime")
    if time.time() - ms / 1000 > MAX_CONVERSION_AGE_S:
        raise Skip("the conversion is more than 90 days old; Google Ads no longer takes it")
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")


def _click_id(event: Event, properties: dict[str, Any]) -> dict[str, str]:
    """The first of gclid, gbraid, wbraid: from properties, else from the page URL's query."""
    page = _mapping(_mapping(event.get("context")).get("page"))
    query = {
        **parse_qs(urlsplit(str(page.get("url") or "")).query),
        **parse_qs(str(page.get("search") or "").lstrip("?")),
    }
    for key in CLICK_IDS:
        value = properties.get(key) or (query.get(key) or [None])[0]
        if value:
            return {key: str(value)}
    return {}


def _user_identifiers(
    event: Event, properties: dict[str, Any], settings: GoogleAdsSettings
) -> list[dict[str, str]]:
    traits = _mapping(_mapping(event.get("context")).get("traits"))
    email = hashing.hash_google_email(properties.get("email") or traits.get("email"))
    phone = hashing.hash_phone_e164(
        properties.get("phone") or traits.get("phone"), settings.phone_country_code
    )
    identifiers = []
    if email:
        identifiers.append({"hashedEmail": email})
    if phone:
        identifiers.append({"hashedPhoneNumber": phone})
    return identifiers


def _order_fields(properties: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    order_id = properties.get("order_id") or properties.get("orderId")
    if order_id:
        fields["orderId"] = str(order_id)
    value = next(
        (properties[key] for key in ("total", "revenue", "value") if _is_number(properties.get(key))), None
    )
    if value is not None:
        fields["conversionValue"] = value
    currency = properties.get("currency")
    if currency:
        code = str(currency).strip().upper()
        if len(code) != 3 or not code.isalpha():
            raise Skip(f"currency {currency!r} is not an ISO 4217 code")
        fields["currencyCode"] = code
    return fields


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- responses -----------------------------------------------------------------------------


def google_ads_errors(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The GoogleAdsFailure errors inside a google.rpc.Status (`error` or `partialFailureError`)."""
    details = status.get("details")
    errors: list[Mapping[str, Any]] = []
    for detail in details if isinstance(details, list) else []:
        found = detail.get("errors") if isinstance(detail, Mapping) else None
        if isinstance(found, list):
            errors.extend(error for error in found if isinstance(error, Mapping))
    return errors


def _row_of(error: Mapping[str, Any]) -> int | None:
    """The index of the conversion an error points at (`conversions[i]`), if it names one."""
    location = error.get("location")
    elements = location.get("fieldPathElements") if isinstance(location, Mapping) else None
    for element in elements if isinstance(elements, list) else []:
        if isinstance(element, Mapping) and element.get("fieldName") == "conversions":
            index = element.get("index")
            return index if isinstance(index, int) else None
    return None


def _error_code(error: Mapping[str, Any]) -> str:
    """`conversionUploadError: TOO_RECENT_EVENT` → the code's value, TOO_RECENT_EVENT."""
    code = error.get("errorCode")
    return str(next(iter(code.values()), "")) if isinstance(code, Mapping) and code else ""


def _describe(error: Mapping[str, Any]) -> str:
    code = error.get("errorCode")
    kind = ", ".join(f"{key}: {value}" for key, value in code.items()) if isinstance(code, Mapping) else ""
    return f"{kind}: {error.get('message', '')}".strip(": ")


def _failed_rows(status: Mapping[str, Any], count: int) -> dict[int, str]:
    rows: dict[int, str] = {}
    for error in google_ads_errors(status):
        index = _row_of(error)
        if index is not None and 0 <= index < count:
            rows.setdefault(index, _describe(error))
    return rows


def _partial_failure_outcomes(failure: Mapping[str, Any], count: int, prefix: str) -> list[Outcome]:
    by_row: dict[int, Mapping[str, Any]] = {}
    for error in google_ads_errors(failure):
        index = _row_of(error)
        if index is not None and 0 <= index < count:
            by_row.setdefault(index, error)
    if not by_row:
        return [
            Outcome.give_up(f"{prefix}: partial failure naming no conversion: {failure.get('message', '')}")
        ] * count
    outcomes = []
    for index in range(count):
        error = by_row.get(index)
        if error is None:
            outcomes.append(Outcome.delivered(prefix))
        elif _error_code(error) in ALREADY_RECORDED:
            outcomes.append(Outcome.delivered(f"{prefix}: already recorded ({_describe(error)})"))
        elif _error_code(error) in TOO_RECENT:
            outcomes.append(Outcome.retry(f"{prefix}: {_describe(error)}", TOO_RECENT_WAIT_S))
        else:
            outcomes.append(Outcome.give_up(f"{prefix}: {_describe(error)}"))
    return outcomes


def _retry_delay(error: Mapping[str, Any]) -> float | None:
    """The longest `quotaErrorDetails.retryDelay` ("30s") of a quota error, in seconds."""
    delays = []
    for failure in google_ads_errors(error):
        details = failure.get("details")
        quota = details.get("quotaErrorDetails") if isinstance(details, Mapping) else None
        delay = quota.get("retryDelay") if isinstance(quota, Mapping) else None
        match = _DURATION.match(delay) if isinstance(delay, str) else None
        if match:
            delays.append(float(match.group(1)))
    return max(delays) if delays else None


destination = GoogleAds()
