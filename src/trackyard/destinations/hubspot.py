"""HubSpot: contacts, companies and custom behavioral events through the v3 APIs.

Wire contract and Segment's mappings: destinations-marketing.md §5, appendix A.5, appendix B.
Auth is `Authorization: Bearer <private app access token>` (API keys were retired); the
host is `https://api.hubapi.com` for every data centre, or `base_url`.

Decisions (the open questions of §5 and appendix C.5):
* identify → contact upsert by email through `POST /crm/v3/objects/contacts/batch/upsert`
  (`idProperty: "email"`), one request for up to 100 contacts, instead of Segment's
  PATCH-then-POST-on-404 per contact; Appendix C.5's fallback (batch read, then create or
  update) needs the answer of a first call, which a one-request-per-batch destination
  cannot use. Identifier: `traits.email`, else `context.traits.email`; an identify with
  neither, or with an address that is not an email, is skipped with the reason (HubSpot
  rejects it). The email is trimmed and lower-cased, as HubSpot stores it.
* Properties are HubSpot internal names. Standard ones: email, firstname, lastname, phone,
  company, website, lifecyclestage (lower-cased), and from `traits.address` address ←
  street, city, state, country, zip ← postalCode/postal_code. Other traits go only where
  the "contact properties" setting maps them (`plan: plan`), because the v3 API refuses a
  whole record with an unknown property (`PROPERTY_DOESNT_EXIST`) and a pure destination
  cannot fetch the account's property list as classic Segment did. Appendix A.5: `plan` is
  not sent unless mapped.
* Values are strings, as HubSpot's API model declares them: trimmed; booleans
  "true"/"false"; objects as JSON; arrays joined with ";". ISO-8601 values become epoch
  milliseconds: a date-only value (or any value of a property named in "date properties")
  at UTC midnight, as HubSpot's `date` properties require; a date-time as such, as its
  `datetime` properties take.
* Two identifies of one email in a batch would make HubSpot refuse the batch ("duplicate
  IDs"), so the request merges them (later values win) into one input whose
  `objectWriteTraceId` lists the payload positions it carries; per-input errors are traced
  back through it.
* group → company upsert through `POST /crm/v3/objects/companies/batch/upsert` keyed by the
  unique custom property `segment_group_id` (setting; it must exist on companies, as
  Segment creates it) ← groupId. Properties: name, description, phone, lifecyclestage,
  address/city/state/zip/country from `traits.address`, numberofemployees ← employees,
  domain ← the host of `traits.website`, industry only when it is one of HubSpot's option
  values (upper-case, e.g. COMPUTER_SOFTWARE: free text fails the record), plus mapped
  "company properties". The contact–company association is not made: it needs the
  HubSpot record ids that only the upsert responses carry, and a destination sends one
  stateless request per batch. HubSpot itself associates contacts with the company whose
  domain matches their email domain (its default "automatically associate" setting).
* track → custom behavioral event, `POST /events/v3/send/batch` `{"inputs": [...]}`:
  `eventName` = `pe<Hub ID>_<event name lower-cased, other characters as "_">` (a name
  already starting with `pe<Hub ID>_` passes unchanged; without the Hub ID setting, tracks
  are skipped); `occurredAt` ← timestamp (ISO-8601); `email` ← properties.email, else
  context.traits.email (skipped without); `properties` ← the event's properties flattened
  with "_", names reduced to HubSpot's `[a-z0-9_]` starting with a letter, at most 50 (the
  limit per occurrence); `uuid` ← uuid5 of the messageId (HubSpot's occurrence id, so a
  resent event is the same occurrence). The event must be defined in HubSpot (Marketing
  Hub Enterprise). page, screen and alias are not taken (HubSpot has no cloud-mode target).
* Batching: 100 inputs per request (HubSpot's CRM batch limit, also under the 500 of the
  events batch); no byte limit is documented, requests stay under 1 MB.
* Responses: 200/201/204 delivered. 207 (multi-status) delivers all but the inputs named
  by an error's `context` (objectWriteTraceId, ids, emails or uuids), which give up; a 400
  naming inputs gives those up and retries the others; errors naming no input fail every
  payload of the request. 401 (expired or revoked token) and 403 (missing scope) give up:
  a private app token does not refresh. 429: after Retry-After if sent, else after the
  policy window (`X-HubSpot-RateLimit-Interval-Milliseconds`, 10 s for
  TEN_SECONDLY_ROLLING, 1 s for SECONDLY); a DAILY policy is retried every 10 minutes
  (HubSpot resets it at midnight in the account's time zone, which the API does not tell).
  5xx are retried.
* Rate limit: 10 requests/s, HubSpot's smallest documented burst limit (100 per 10 s for
  Free and Starter apps); raise it with the rate limit setting on Professional (190 / 10 s)
  or with the API add-on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
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

DEFAULT_HOST = "https://api.hubapi.com"
PATHS = {
    "contacts": "/crm/v3/objects/contacts/batch/upsert",
    "companies": "/crm/v3/objects/companies/batch/upsert",
    "events": "/events/v3/send/batch",
}
MAX_INPUTS = 100
MAX_EVENT_PROPERTIES = 50
DAILY_LIMIT_PAUSE_S = 600.0
DEFAULT_WINDOW_S = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0}
EVENT_NAMESPACE = uuid.UUID("8d3b6f0e-5a0c-4f8e-9d43-2b8f1d6c7a51")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_OPTION_VALUE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_NOT_NAME_CHARACTERS = re.compile(r"[^a-z0-9_]+")

# Segment trait → HubSpot contact property, for traits at the top level.
CONTACT_TRAITS = {
    "firstName": "firstname",
    "first_name": "firstname",
    "lastName": "lastname",
    "last_name": "lastname",
    "phone": "phone",
    "website": "website",
}
COMPANY_TRAITS = {
    "name": "name",
    "description": "description",
    "phone": "phone",
    "employees": "numberofemployees",
}
# Segment address field → HubSpot property (the same names on contacts and companies).
ADDRESS_FIELDS = {
    "street": "address",
    "city": "city",
    "state": "state",
    "country": "country",
    "postalCode": "zip",
    "postal_code": "zip",
}


@dataclass(frozen=True, kw_only=True)
class HubSpotSettings(HTTPSettings):
    access_token: str = setting(
        label="Private app access token",
        secret=True,
        help="Settings → Integrations → Private Apps; scopes crm.objects.contacts.write, "
        "crm.objects.companies.write and analytics.behavioral_events.send.",
    )
    hub_id: str | None = setting(
        label="Hub ID",
        default=None,
        help="Your account's Hub ID (portal ID): custom event names are pe<Hub ID>_<name>. "
        "Without it, track calls are not sent.",
    )
    contact_properties: dict[str, str] = setting(
        label="Contact properties",
        default={},
        help="More traits to send, as trait: HubSpot property internal name (e.g. plan: plan). "
        "The properties must exist in HubSpot.",
    )
    company_properties: dict[str, str] = setting(
        label="Company properties",
        default={},
        help="More group traits to send, as trait: HubSpot company property internal name.",
    )
    date_properties: list[str] = setting(
        label="Date properties",
        default=[],
        help="HubSpot properties of type date (not datetime): their values are sent at UTC midnight.",
    )
    company_id_property: str = setting(
        label="Company id property",
        default="segment_group_id",
        help="A unique-value company property that holds the Segment groupId; companies are upserted by it.",
    )


class HubSpot(Destination[HubSpotSettings]):
    slug = "hubspot"
    name = "HubSpot"
    category = Category.CRM
    description = "Upsert HubSpot contacts and companies and send custom behavioral events."
    Settings = HubSpotSettings
    batching = Batching(max_events=MAX_INPUTS, max_bytes=1_000_000, max_wait=1.0)
    default_rate_limit = 10.0
    dedupe_field = "uuid"

    def identify(self, event: Event, settings: HubSpotSettings) -> Payload:
        traits = _mapping(event.get("traits"))
        email = _email(traits.get("email") or _context_traits(event).get("email"))
        if email is None:
            raise Skip("HubSpot upserts contacts by email; this identify has no valid traits.email")
        properties = _standard_properties(traits, CONTACT_TRAITS)
        company = traits.get("company")
        if isinstance(company, Mapping):
            company = company.get("name")
        if company:
            properties["company"] = company
        properties.update(_lifecycle_stage(traits))
        properties.update(_mapped(traits, settings.contact_properties))
        properties["email"] = email
        return Payload(
            "contacts",
            {"idProperty": "email", "id": email, "properties": _values(properties, settings)},
        )

    def group(self, event: Event, settings: HubSpotSettings) -> Payload:
        group_id = event.get("groupId")
        if not group_id:
            raise Skip("HubSpot upserts companies by groupId; this group has none")
        traits = _mapping(event.get("traits"))
        properties = _standard_properties(traits, COMPANY_TRAITS)
        domain = _domain(traits.get("website"))
        if domain:
            properties["domain"] = domain
        industry = traits.get("industry")
        if isinstance(industry, str) and _OPTION_VALUE.match(industry):
            properties["industry"] = industry
        properties.update(_lifecycle_stage(traits))
        properties.update(_mapped(traits, settings.company_properties))
        properties[settings.company_id_property] = str(group_id)
        return Payload(
            "companies",
            {
                "idProperty": settings.company_id_property,
                "id": str(group_id),
                "properties": _values(properties, settings),
            },
        )

    def track(self, event: Event, settings: HubSpotSettings) -> Payload:
        if not settings.hub_id:
            raise Skip("HubSpot custom events need the Hub ID setting (event names are pe<Hub ID>_<name>)")
        name = event.get("event")
        if not name:
            raise Skip("track has no event name")
        properties = _mapping(event.get("properties"))
        email = _email(properties.get("email") or _context_traits(event).get("email"))
        if email is None:
            raise Skip(
                "HubSpot ties events to contacts by email; this track has no properties.email or context.traits.email"
            )
        body: dict[str, Any] = {
            "eventName": event_name(str(name), settings.hub_id),
            "email": email,
            "properties": _values(event_properties(properties), settings),
        }
        occurred = parse_ms(event.get("timestamp"))
        if occurred is not None:
            body["occurredAt"] = _iso(occurred)
        if event.get("messageId"):
            body["uuid"] = str(uuid.uuid5(EVENT_NAMESPACE, str(event["messageId"])))
        return Payload("events", body)

    def request(self, endpoint: str, bodies: list[Any], settings: HubSpotSettings) -> Request:
        inputs = bodies if endpoint == "events" else merged_upserts(bodies)
        return Request.json(
            base_url(settings, DEFAULT_HOST) + PATHS[endpoint],
            {"inputs": inputs},
            {"Authorization": f"Bearer {settings.access_token}"},
        )

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        status = response.status
        if status == 429:
            return Outcome.retry(f"HTTP 429: {response.text[:200]}", rate_limit_pause(response))
        if status not in (207, 400):
            return classify_status(response)
        failed = _failed_positions(response, request, count)
        if not failed:
            return Outcome.give_up(f"HTTP {status}: {response.text[:200]}")
        others = (
            Outcome.delivered(f"HTTP {status}")
            if status == 207
            else Outcome.retry("HTTP 400: rejected with the batch because of other inputs")
        )
        return [
            Outcome.give_up(f"HTTP {status}: {failed[index]}") if index in failed else others
            for index in range(count)
        ]


def event_name(name: str, hub_id: str) -> str:
    """HubSpot's fully qualified event name: pe<Hub ID>_<internal name>."""
    prefix = f"pe{hub_id}_"
    if name.startswith(prefix):
        return name
    return prefix + _internal_name(name)


def event_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Event properties flattened with "_" under HubSpot's names, at most 50 of them."""
    flat = _flattened(properties)
    return dict(list(flat.items())[:MAX_EVENT_PROPERTIES])


def merged_upserts(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One input per id (later values win), tagged with the payload positions it carries."""
    by_id: dict[str, dict[str, Any]] = {}
    positions: dict[str, list[int]] = {}
    for position, body in enumerate(bodies):
        key = body["id"]
        if key in by_id:
            by_id[key] = {**by_id[key], "properties": {**by_id[key]["properties"], **body["properties"]}}
        else:
            by_id[key] = dict(body)
        positions.setdefault(key, []).append(position)
    return [
        {**upsert, "objectWriteTraceId": ",".join(map(str, positions[key]))} for key, upsert in by_id.items()
    ]


def rate_limit_pause(response: Response) -> float:
    """Seconds to wait after a 429, from Retry-After or HubSpot's policy and window headers."""
    explicit = retry_after_seconds(response.headers)
    if explicit is not None:
        return explicit
    body = response.json()
    policy = body.get("policyName") if isinstance(body, dict) else None
    if policy == "DAILY":
        return DAILY_LIMIT_PAUSE_S
    window = response.headers.get("x-hubspot-ratelimit-interval-milliseconds")
    if window and window.isdigit():
        return int(window) / 1000
    return DEFAULT_WINDOW_S.get(str(policy), DEFAULT_WINDOW_S["TEN_SECONDLY_ROLLING"])


def _standard_properties(traits: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    properties = {names[key]: value for key, value in traits.items() if key in names and value is not None}
    address = traits.get("address")
    if isinstance(address, Mapping):
        properties.update(
            {ADDRESS_FIELDS[key]: value for key, value in address.items() if key in ADDRESS_FIELDS and value}
        )
    return properties


def _lifecycle_stage(traits: Mapping[str, Any]) -> dict[str, str]:
    """HubSpot's lifecyclestage option values are lower-case (subscriber, lead, customer...)."""
    stage = traits.get("lifecyclestage") or traits.get("lifecycle_stage")
    return {"lifecyclestage": stage.lower()} if isinstance(stage, str) and stage else {}


def _mapped(traits: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    return {prop: traits[trait] for trait, prop in mapping.items() if traits.get(trait) is not None}


def _values(properties: Mapping[str, Any], settings: HubSpotSettings) -> dict[str, str]:
    dates = set(settings.date_properties)
    return {name: property_value(value, date=name in dates) for name, value in properties.items()}


def property_value(value: Any, *, date: bool = False) -> str:
    """A property value as HubSpot takes it: a string, ISO dates as epoch milliseconds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value.strip()
        if _DATE_ONLY.match(text) or (date and _DATE_TIME.match(text)):
            return str(_utc_midnight_ms(text))
        if _DATE_TIME.match(text) and (ms := parse_ms(text)) is not None:
            return str(ms)
        return text
    if isinstance(value, list):
        return ";".join(
            item if isinstance(item, str) else orjson.dumps(item).decode()
            for item in value
            if item is not None
        )
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return str(value)


def _utc_midnight_ms(text: str) -> int:
    day = datetime.fromisoformat(text[:10]).replace(tzinfo=UTC)
    return int(day.timestamp()) * 1000


def _flattened(properties: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in properties.items():
        name = _internal_name(f"{prefix}_{key}" if prefix else str(key))
        if isinstance(value, Mapping):
            flat.update(_flattened(value, name))
        elif value is not None and name:
            flat[name] = value
    return flat


def _internal_name(name: str) -> str:
    """HubSpot's internal-name form: lower-case [a-z0-9_], starting with a letter."""
    cleaned = _NOT_NAME_CHARACTERS.sub("_", name.lower()).strip("_")
    return cleaned.lstrip("0123456789_")


def _email(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    return email if _EMAIL.match(email) else None


def _domain(website: Any) -> str | None:
    if not isinstance(website, str) or not website.strip():
        return None
    text = website.strip()
    host = urlsplit(text if "//" in text else f"//{text}").hostname
    return host.removeprefix("www.") if host else None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _context_traits(event: Event) -> Mapping[str, Any]:
    return _mapping(_mapping(event.get("context")).get("traits"))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _failed_positions(response: Response, request: Request, count: int) -> dict[int, str]:
    """Payload positions named by the errors of a batch response, with HubSpot's words."""
    body = response.json()
    if not isinstance(body, dict):
        return {}
    errors = body.get("errors") if isinstance(body.get("errors"), list) else []
    inputs = _request_inputs(request)
    failed: dict[int, str] = {}
    for error in [*errors, body]:  # a 400 may name its inputs in its own top-level context
        if not isinstance(error, dict) or not isinstance(error.get("context"), dict):
            continue
        words = ": ".join(str(error[key]) for key in ("category", "message") if error.get(key))
        for index, item in enumerate(inputs):
            if _names_input(error["context"], item):
                for position in _positions(item, index):
                    if 0 <= position < count:
                        failed[position] = words or "rejected by HubSpot"
    return failed


def _request_inputs(request: Request) -> list[dict[str, Any]]:
    try:
        inputs = orjson.loads(request.body).get("inputs")
    except (orjson.JSONDecodeError, AttributeError):
        return []
    return [item for item in inputs if isinstance(item, dict)] if isinstance(inputs, list) else []


def _names_input(context: dict[str, Any], item: dict[str, Any]) -> bool:
    """Whether an error context names this input: by its trace id, or by its id, uuid or email."""
    traces = set(_strings(context.get("objectWriteTraceId")))
    others = {
        value.lower()
        for key, value_list in context.items()
        if key != "objectWriteTraceId"
        for value in _strings(value_list)
    }
    if item.get("objectWriteTraceId") in traces:
        return True
    return any(str(item[key]).lower() in others for key in ("id", "uuid", "email") if item.get(key))


def _strings(value: Any) -> list[str]:
    return [str(item) for item in (value if isinstance(value, list) else [value]) if item is not None]


def _positions(item: dict[str, Any], index: int) -> list[int]:
    """The payload positions an input carries: its trace id for merged upserts, else its index."""
    trace = item.get("objectWriteTraceId")
    if isinstance(trace, str) and trace:
        return [int(part) for part in trace.split(",") if part.isdigit()]
    return [index]


destination = HubSpot()
