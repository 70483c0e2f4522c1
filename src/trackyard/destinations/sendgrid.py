"""SendGrid Marketing Campaigns: contacts upserted through `PUT /v3/marketing/contacts`.

Wire contract and Segment's mapping: destinations-marketing.md §13 (Segment's SendGrid
Marketing Campaigns "Upsert Contact" action).

Decisions (the open questions of §13 and appendix C):
* One endpoint: identify → a contact in `PUT /v3/marketing/contacts`
  `{"list_ids": [...], "contacts": [...]}`, batched up to SendGrid's limit of 30,000
  contacts or 6 MB per request, waiting up to 5 s to fill a batch (the upsert is
  asynchronous anyway). `Authorization: Bearer <API key>`; the global host
  (`api.sendgrid.com`) or the EU one (`api.eu.sendgrid.com`), or `base_url`. The
  optional list ids setting adds every contact to those lists.
* Asynchronous jobs: SendGrid answers 202 `{"job_id"}` once the request is validated and
  queued. 202 is delivered; the job id goes into the delivery record's reason. We do
  not poll `GET /v3/marketing/contacts/imports/{job_id}`: a contact that fails inside
  the job fails on SendGrid's side, visible there, and retrying it would fail the same way.
* Identifier: the email (traits.email, else context.traits.email); an identify without
  one is skipped with a reason, as is one whose email has no `@` (SendGrid refuses the
  whole request for one invalid address). `external_id` ← traits.external_id as
  Segment maps it. The anonymousId is *not* sent as `anonymous_id`: SendGrid updates a
  contact only when every identifier it holds is present, and an anonymousId changes
  with each device, so it would make later upserts of the same person fail.
* Reserved fields: first_name/last_name ← firstName/lastName (or snake_case),
  address_line_1 ← address.street (or line1), address_line_2 ← address.line2, city,
  state_province_region ← address.state, postal_code ← address.postalCode (or
  postal_code), country, phone_number ← phone.
* Custom fields must exist in SendGrid and are addressed by id (`e1_T`, `w2_N`,
  `e3_D`); resolving names needs a lookup a pure translation cannot make, so the
  `custom_fields` setting maps trait names to field ids. The id's suffix gives the type:
  `_T` text, `_N` number (non-numbers left out), `_D` date sent as MM/DD/YYYY. Traits
  that are not mapped are not sent: SendGrid refuses unknown field ids.
* track, page, screen, group and alias are not taken: the destination keeps contacts.
* Responses: 2xx delivered; a 400 whose `errors[].field` names `contacts[<n>]` gives
  those contacts up and retries the rest, which SendGrid refused only because of them;
  other 4xx (400, 401, 403, 413) give up; 408/423/429 and 5xx are retried, a 429 until
  `X-RateLimit-Reset` (epoch seconds) or `Retry-After`.
* Rate limit: SendGrid publishes no number for this endpoint (its limits vary by plan
  and are told at run time by `X-RateLimit-*` headers), so there is no default rate; a
  full batch carries 30,000 contacts, and 429s are honoured as said.
"""

from __future__ import annotations

import re
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
    classify_status,
    retry_after_seconds,
    setting,
)
from trackyard.spec.timestamps import parse_ms

REGION_HOSTS = {"global": "https://api.sendgrid.com", "eu": "https://api.eu.sendgrid.com"}
CONTACTS_PATH = "/v3/marketing/contacts"
CONTACTS = "contacts"
MAX_CONTACTS = 30_000
MAX_REQUEST_BYTES = 6_000_000
# `{"list_ids":[…],"contacts":[]}`: room for the envelope and a few hundred list ids.
_ENVELOPE_BYTES = 16_000
ADDRESS_FIELDS = {
    "address_line_1": ("street", "line1", "address_line_1"),
    "address_line_2": ("line2", "address_line_2"),
    "city": ("city",),
    "state_province_region": ("state", "state_province_region"),
    "postal_code": ("postalCode", "postal_code"),
    "country": ("country",),
}
_CUSTOM_FIELD_ID = re.compile(r"^[a-z]\d+_[TND]$")
_CONTACT_INDEX = re.compile(r"^contacts\[(\d+)\]")


@dataclass(frozen=True, kw_only=True)
class SendGridSettings(HTTPSettings):
    api_key: str = setting(
        label="API key",
        secret=True,
        help="Settings → API Keys; needs the Marketing (contacts) permission.",
    )
    region: str = setting(
        label="Region",
        default="global",
        choices=tuple(REGION_HOSTS),
        help="global (api.sendgrid.com) or eu (api.eu.sendgrid.com) for EU-pinned subusers.",
    )
    list_ids: list[str] = setting(
        label="List IDs", default=[], help="Every contact is also added to these lists (optional)."
    )
    custom_fields: dict[str, str] = setting(
        label="Custom fields",
        default={},
        help="Trait name → custom field id, e.g. `plan: e1_T; logins: e2_N` (Marketing → Custom Fields).",
    )

    def __post_init__(self) -> None:
        for trait, field_id in self.custom_fields.items():
            if not _CUSTOM_FIELD_ID.match(field_id):
                raise SettingsError(
                    f"sendgrid: setting 'custom_fields' maps {trait!r} to {field_id!r}, which is not a "
                    "custom field id such as e1_T (text), e2_N (number) or e3_D (date)"
                )


class SendGrid(Destination[SendGridSettings]):
    slug = "sendgrid"
    name = "SendGrid Marketing Campaigns"
    category = Category.EMAIL
    description = "Email marketing: contacts and list memberships in SendGrid Marketing Campaigns."
    Settings = SendGridSettings
    batching = Batching(max_events=MAX_CONTACTS, max_bytes=MAX_REQUEST_BYTES - _ENVELOPE_BYTES, max_wait=5.0)
    default_rate_limit = 0.0
    dedupe_field = ""

    def identify(self, event: Event, settings: SendGridSettings) -> Payload:
        traits = _mapping(event.get("traits"))
        email = traits.get("email") or _mapping(_mapping(event.get("context")).get("traits")).get("email")
        if not email:
            raise Skip("SendGrid keys contacts by email; this identify has no traits.email")
        if "@" not in str(email):
            raise Skip(f"SendGrid refuses the email {email!r}; it would fail the whole request")
        contact = {"email": str(email).strip(), **reserved_fields(traits)}
        custom = custom_field_values(traits, settings)
        if custom:
            contact["custom_fields"] = custom
        return Payload(CONTACTS, contact)

    def track(self, event: Event, settings: SendGridSettings) -> Payload:
        raise Skip("SendGrid Marketing Campaigns keeps contacts; only identify calls update them")

    def page(self, event: Event, settings: SendGridSettings) -> Payload:
        raise Skip("SendGrid Marketing Campaigns keeps contacts; only identify calls update them")

    def screen(self, event: Event, settings: SendGridSettings) -> Payload:
        raise Skip("SendGrid Marketing Campaigns keeps contacts; only identify calls update them")

    def group(self, event: Event, settings: SendGridSettings) -> Payload:
        raise Skip("SendGrid Marketing Campaigns keeps contacts; only identify calls update them")

    def alias(self, event: Event, settings: SendGridSettings) -> Payload:
        raise Skip("SendGrid Marketing Campaigns keeps contacts; only identify calls update them")

    def request(self, endpoint: str, bodies: list[Any], settings: SendGridSettings) -> Request:
        url = base_url(settings, REGION_HOSTS[settings.region]) + CONTACTS_PATH
        document: dict[str, Any] = {"contacts": bodies}
        if settings.list_ids:
            document = {"list_ids": list(settings.list_ids), **document}
        headers = {"Authorization": f"Bearer {settings.api_key.strip()}"}
        return Request.json(url, document, headers, method="PUT")

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        status = response.status
        if 200 <= status < 300:
            job = _mapping(response.json()).get("job_id")
            return Outcome.delivered(f"HTTP {status}: job {job} queued" if job else f"HTTP {status}")
        if status in RETRYABLE_STATUSES or status >= 500:
            return Outcome.retry(f"HTTP {status}: {response.text[:200]}", _retry_after(response))
        rejected = rejected_contacts(response, count) if status == 400 else {}
        if not rejected:
            return classify_status(response)
        return [
            Outcome.give_up(f"HTTP 400: SendGrid rejected this contact: {rejected[index]}")
            if index in rejected
            else Outcome.retry("HTTP 400: refused with the batch because of other contacts")
            for index in range(count)
        ]


def reserved_fields(traits: Mapping[str, Any]) -> dict[str, str]:
    address = _mapping(traits.get("address"))
    fields = {
        "first_name": traits.get("firstName") or traits.get("first_name"),
        "last_name": traits.get("lastName") or traits.get("last_name"),
        "phone_number": traits.get("phone"),
        "external_id": traits.get("external_id"),
    }
    for field, keys in ADDRESS_FIELDS.items():
        fields[field] = next((address[key] for key in keys if address.get(key) not in (None, "")), None)
    return {field: str(value) for field, value in fields.items() if value not in (None, "")}


def custom_field_values(traits: Mapping[str, Any], settings: SendGridSettings) -> dict[str, Any]:
    values = {}
    for trait, field_id in settings.custom_fields.items():
        value = _typed(traits.get(trait), field_id[-1])
        if value is not None:
            values[field_id] = value
    return values


def _typed(value: Any, kind: str) -> Any:
    """The value as SendGrid's field type wants it: T text, N number, D MM/DD/YYYY."""
    if value is None or isinstance(value, dict | list):
        return None
    if kind == "N":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "D":
        ms = parse_ms(value)
        return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%m/%d/%Y")
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def rejected_contacts(response: Response, count: int) -> dict[int, str]:
    """Index → SendGrid's message, for each contact a 400's `errors[].field` names."""
    errors = _mapping(response.json()).get("errors")
    rejected: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else []:
        match = _CONTACT_INDEX.match(str(_mapping(error).get("field") or ""))
        if match and int(match.group(1)) < count:
            rejected.setdefault(int(match.group(1)), f"{error['field']}: {error.get('message', 'invalid')}")
    return rejected


def _retry_after(response: Response) -> float | None:
    """Retry-After; on a 429 also X-RateLimit-Reset, which SendGrid sends with every answer."""
    if response.status == 429:
        return retry_after_seconds(response.headers)
    delay = response.headers.get("retry-after")
    return retry_after_seconds({"retry-after": delay}) if delay else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = SendGrid()
