"""Salesforce: lead or contact upserts through the REST API's composite resource.

Wire contract and Segment's mappings: destinations-marketing.md §8 and §0.1.
Requests go to the org's instance URL (`https://<my domain>.my.salesforce.com`, the
`base_url` setting, required here) with `Authorization: Bearer <access token>`.

Decisions (the open questions of §8):
* Opt-in, as Segment's Salesforce destination: `integrations.All` does not enable it; an
  event reaches it only when its `integrations` object names "Salesforce" as true.
* Upsert by external id, not by email lookup. Segment's lookup (a SOQL query, then create
  or PATCH) needs the answer of a first call, which a destination that sends one stateless
  request per batch cannot use, and it races with itself. An upsert on a custom field
  marked External ID and Unique (the "external id field" setting, e.g. `User_Id__c`) is
  one idempotent call per record: `PATCH /sobjects/{Lead|Contact}/{field}/{value}` creates
  or updates. The value is the userId, or the lower-cased `traits.email` when "match by"
  is email (the field then holds the email, since the standard Email field cannot be an
  external id). An identify without it is skipped with the reason.
* Batching through the composite resource: `POST /services/data/vXX.X/composite` with
  `allOrNone: false` and up to 25 upsert subrequests (Salesforce's limit), one per
  identify, each with `referenceId` = its position. Subrequests run in order and count as
  one API call against the org's daily allocation. sObject Collections upsert was set
  aside: it refuses every record of a request that repeats an external id ("Duplicate
  external id specified"), which two identifies of one user in a batch would trigger,
  while composite subrequests run one after another. The value is URL-encoded in the
  subrequest path.
* identify → fields (Segment's Lead/Contact actions): LastName ← lastName/last_name, else
  the last word of traits.name; FirstName ← firstName/first_name, else the rest of the
  name; Email, Phone, Title; Company ← traits.company (or its name; Lead only, where it is
  required); address ← traits.address as Street, City, State, PostalCode, Country (Lead)
  or MailingStreet… (Contact). Salesforce requires LastName (and Company on a Lead) to
  create a record; without them the create fails with REQUIRED_FIELD_MISSING and gives
  up, while an update of an existing record succeeds. Custom fields only through the
  "custom fields" setting (trait: API name, e.g. plan: Plan__c), as Salesforce refuses
  unknown fields (INVALID_FIELD). group, track, page, screen and alias are not taken
  (Segment's presets send identify only).
* Responses. Per subrequest: 2xx delivered; REQUEST_LIMIT_EXCEEDED, UNABLE_TO_LOCK_ROW,
  "Too many SOQL queries", SERVER_UNAVAILABLE and 5xx are retried; 300 (several records
  hold the external id) and other 4xx give up with Salesforce's errorCode and message.
  Whole request: 403 REQUEST_LIMIT_EXCEEDED (the org's 24-hour allocation is spent) is a
  throttle and retried, as are 400 UNABLE_TO_LOCK_ROW, 429, 503 and other 5xx; 401
  INVALID_SESSION_ID gives up (an access token cannot be refreshed here: use a token of a
  long session or an integration user); other 4xx give up.
* Rate limit: 1 request/s by default (each carries up to 25 records): 86,400 calls a day
  at most, within the smallest production allocation (Enterprise Edition's 100,000 calls
  per 24 hours). Salesforce publishes no per-second limit, only that daily allocation.
* API version: setting, default 62.0 (Segment pins 53.0; any version ≥ 34.0 has the
  composite resource).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

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

MAX_SUBREQUESTS = 25
RETRYABLE_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
RETRYABLE_MESSAGES = ("Too many SOQL queries",)
ADDRESS_FIELDS = {
    "street": "Street",
    "city": "City",
    "state": "State",
    "postalCode": "PostalCode",
    "postal_code": "PostalCode",
    "country": "Country",
}
_VERSION = re.compile(r"^v?(\d{2,3}\.\d)$")


@dataclass(frozen=True, kw_only=True)
class SalesforceSettings(HTTPSettings):
    base_url: str = setting(
        label="Instance URL",
        help="Your org's URL, e.g. https://acme.my.salesforce.com (the instance_url of your OAuth token).",
    )
    access_token: str = setting(
        label="Access token",
        secret=True,
        help="An OAuth access token of an integration user with API access and edit rights on the object.",
    )
    api_version: str = setting(label="API version", default="62.0", help="The REST API version, e.g. 62.0.")
    sobject: str = setting(
        label="Object", default="Lead", choices=("Lead", "Contact"), help="The object identify upserts."
    )
    external_id_field: str = setting(
        label="External id field",
        help="API name of a custom field marked External ID and Unique on the object, e.g. User_Id__c.",
    )
    match_by: str = setting(
        label="Match by",
        default="userId",
        choices=("userId", "email"),
        help="What the external id field holds: the Segment userId, or the email.",
    )
    custom_fields: dict[str, str] = setting(
        label="Custom fields",
        default={},
        help="Traits to send as fields, as trait: field API name (e.g. plan: Plan__c).",
    )


class Salesforce(Destination[SalesforceSettings]):
    slug = "salesforce"
    name = "Salesforce"
    category = Category.CRM
    description = "Upsert Salesforce leads or contacts by an external id field (opt-in per event)."
    Settings = SalesforceSettings
    batching = Batching(max_events=MAX_SUBREQUESTS, max_bytes=1_000_000, max_wait=1.0)
    default_rate_limit = 1.0
    opt_in = True

    def identify(self, event: Event, settings: SalesforceSettings) -> Payload:
        api_version(settings)
        traits = _mapping(event.get("traits"))
        key = _external_id(event, traits, settings)
        if not key:
            source = "userId" if settings.match_by == "userId" else "traits.email"
            raise Skip(
                f"Salesforce upserts by {settings.external_id_field} ← {source}; this identify has none"
            )
        return Payload("upsert", {"key": key, "fields": record_fields(traits, settings)})

    def request(self, endpoint: str, bodies: list[Any], settings: SalesforceSettings) -> Request:
        version = api_version(settings)
        prefix = f"/services/data/{version}/sobjects/{settings.sobject}/{settings.external_id_field}/"
        subrequests = [
            {
                "method": "PATCH",
                "url": prefix + quote(body["key"], safe=""),
                "referenceId": f"r{position}",
                "body": body["fields"],
            }
            for position, body in enumerate(bodies)
        ]
        return Request.json(
            base_url(settings, "") + f"/services/data/{version}/composite",
            {"allOrNone": False, "compositeRequest": subrequests},
            {"Authorization": f"Bearer {settings.access_token}"},
        )

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        body = response.json()
        if (
            response.status == 200
            and isinstance(body, dict)
            and isinstance(body.get("compositeResponse"), list)
        ):
            return subrequest_outcomes(body["compositeResponse"], count)
        errors = _errors(body)
        if 400 <= response.status < 500 and _retryable(errors):
            return Outcome.retry(f"HTTP {response.status}: {_describe(errors)}")
        return classify_status(response)


def api_version(settings: SalesforceSettings) -> str:
    """The version path segment (`v62.0`); an unusable setting skips events with the reason."""
    match = _VERSION.match(settings.api_version.strip())
    if match is None:
        raise Skip(f"Salesforce API version {settings.api_version!r} is not like 62.0")
    return f"v{match.group(1)}"


def record_fields(traits: Mapping[str, Any], settings: SalesforceSettings) -> dict[str, Any]:
    """The Lead or Contact fields of Segment's default mapping, plus the mapped custom fields."""
    first, last = _names(traits)
    fields: dict[str, Any] = {
        "FirstName": first,
        "LastName": last,
        "Email": traits.get("email"),
        "Phone": traits.get("phone"),
        "Title": traits.get("title"),
    }
    if settings.sobject == "Lead":
        company = traits.get("company")
        fields["Company"] = company.get("name") if isinstance(company, Mapping) else company
    address = _mapping(traits.get("address"))
    prefix = "" if settings.sobject == "Lead" else "Mailing"
    fields.update(
        {prefix + ADDRESS_FIELDS[key]: value for key, value in address.items() if key in ADDRESS_FIELDS}
    )
    fields.update({name: traits.get(trait) for trait, name in settings.custom_fields.items()})
    return {name: value for name, value in fields.items() if value is not None and value != ""}


def subrequest_outcomes(results: list[Any], count: int) -> list[Outcome]:
    """One outcome per payload, from the composite subresponses (matched by referenceId)."""
    by_position: dict[int, Outcome] = {}
    for result in results:
        if not isinstance(result, dict):
            continue
        reference = str(result.get("referenceId", ""))
        if reference.startswith("r") and reference[1:].isdigit():
            by_position[int(reference[1:])] = _subrequest_outcome(result)
    missing = Outcome.retry("Salesforce returned no result for this record")
    return [by_position.get(position, missing) for position in range(count)]


def _subrequest_outcome(result: dict[str, Any]) -> Outcome:
    status = result.get("httpStatusCode")
    status = status if isinstance(status, int) else 0
    errors = _errors(result.get("body"))
    if 200 <= status < 300:
        return Outcome.delivered(f"HTTP {status}")
    words = f"HTTP {status}: {_describe(errors)}"
    if status >= 500 or status in (408, 429) or _retryable(errors):
        return Outcome.retry(words)
    return Outcome.give_up(words)


def _errors(body: Any) -> list[dict[str, Any]]:
    """Salesforce's error list `[{"errorCode", "message", "fields"}]`."""
    return [error for error in body if isinstance(error, dict)] if isinstance(body, list) else []


def _retryable(errors: list[dict[str, Any]]) -> bool:
    return any(
        error.get("errorCode") in RETRYABLE_CODES
        or any(text in str(error.get("message", "")) for text in RETRYABLE_MESSAGES)
        for error in errors
    )


def _describe(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "no error details"
    return "; ".join(f"{error.get('errorCode')}: {error.get('message')}" for error in errors)[:300]


def _external_id(event: Event, traits: Mapping[str, Any], settings: SalesforceSettings) -> str | None:
    if settings.match_by == "email":
        email = traits.get("email")
        return email.strip().lower() if isinstance(email, str) and email.strip() else None
    return str(event["userId"]) if event.get("userId") else None


def _names(traits: Mapping[str, Any]) -> tuple[str | None, str | None]:
    first = traits.get("firstName") or traits.get("first_name")
    last = traits.get("lastName") or traits.get("last_name")
    full = traits.get("name")
    if isinstance(full, str) and full.strip() and not last:
        *given, last = full.split()
        first = first or (" ".join(given) or None)
    return first, last


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = Salesforce()
