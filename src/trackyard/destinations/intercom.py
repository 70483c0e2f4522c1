"""Intercom: users with their companies, and data events.

Wire contract and Segment's mappings: destinations-marketing.md §6, appendix A.6, appendix C.3.
Auth is `Authorization: Bearer <access token>`; hosts `https://api.intercom.io` (US),
`https://api.eu.intercom.io` (EU), `https://api.au.intercom.io` (AU), or `base_url`.

Decisions:
* API generation. A destination sends one stateless request per payload, so Segment's
  Actions flow for identify (search the contact, then PUT /contacts/{id} or POST /contacts,
  retrying a 409 until the eventually consistent search finds it) and for group (POST
  /companies, then attach the searched contact) cannot be followed: each step needs the
  answer of the previous one. Intercom's create-or-update call, `POST /users`, matched by
  `user_id` then `email`, does it in one request, and also creates or updates the user's
  companies and attaches the user to them. It is served under the 1.x versions of the API,
  so the `Intercom-Version` header is a setting that defaults to 1.4 (the version
  RudderStack's "v1" mode and classic Segment used). Data events (`POST /events`) are the
  same in every version. Under a 2.x version Intercom answers /users with an error, which
  gives up with Intercom's message.
* identify → `POST /users`: user_id ← userId, email ← traits.email, name ← traits.name or
  firstName + lastName, phone, avatar ← traits.avatar (`{"type": "avatar", "image_url"}`),
  signed_up_at ← createdAt (unix seconds), last_request_at ← timestamp (unix seconds,
  unless `context.active` is false), unsubscribed_from_emails ← unsubscribedFromEmails;
  `traits.company` with an `id` joins the user to that company. Every other trait is a
  custom attribute (1.x creates unknown attributes on first write): nested objects are
  flattened with "_" (`address_city`), lists are left out (Intercom has no list type),
  strings are cut at 255 characters, "." and "$" in names become "_", and ISO-8601
  values of names ending in `_at` or `_date` become unix seconds (Intercom's date
  convention). Identifier: userId, else traits.email; without either, skipped.
* track → `POST /events`: event_name ← event, created_at ← timestamp (unix seconds,
  second granularity as Intercom's duplicate detection wants), user_id ← userId, else
  email ← properties.email or context.traits.email (skipped without either), metadata ←
  the properties without email, revenue and currency, flattened like custom attributes;
  with a revenue, `price` = `{"amount": revenue in cents, "currency": currency or USD}`.
  Metadata is capped at 10 keys (appendix C.3: the API reference says Intercom keeps the
  first 10 and ignores the rest; `price` is put first so it is kept).
* group → `POST /users` with `companies: [{company_id ← groupId, name, plan, size ←
  employees, website, industry, monthly_spend, remote_created_at ← createdAt (unix s),
  custom_attributes}]`: Intercom creates or updates the company and attaches the user
  (companies only show in Intercom once a user is attached). Without a userId or an email
  (context.traits.email) there is no one to attach: skipped. page, screen and alias are
  not taken (Intercom has no server-side target for them).
* No batching (Intercom's REST API takes one user or event per call) and no dedupe key
  (Intercom deduplicates events by user, name and created_at).
* Responses: 200/202 delivered. 409 (conflict: a concurrent create of the same user) is
  retried, as the retry taxonomy says. A 404 from /events (user not found) is retried: the
  engine sends concurrently, so an event can arrive before the identify that creates its
  user; an event of a user never identified gives up when the engine's retry age runs
  out. Other 4xx give up with Intercom's error list; 429 is retried at `X-RateLimit-Reset`
  (epoch seconds); 5xx are retried.
* Rate limit: 166 requests/s, Intercom's default 10,000 calls per minute per app (spread
  by Intercom over 10-second windows).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    "us": "https://api.intercom.io",
    "eu": "https://api.eu.intercom.io",
    "au": "https://api.au.intercom.io",
}
PATHS = {"users": "/users", "events": "/events"}
MAX_METADATA_KEYS = 10
MAX_STRING_LENGTH = 255

# Traits that fill standard user fields and are not repeated as custom attributes.
USER_TRAITS = frozenset(
    {
        "email",
        "name",
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "phone",
        "avatar",
        "createdAt",
        "created_at",
        "company",
        "unsubscribedFromEmails",
        "unsubscribed_from_emails",
    }
)
COMPANY_TRAITS = {
    "name": "name",
    "plan": "plan",
    "employees": "size",
    "website": "website",
    "industry": "industry",
    "monthly_spend": "monthly_spend",
    "monthlySpend": "monthly_spend",
}
COMPANY_CONTROL_TRAITS = frozenset({*COMPANY_TRAITS, "createdAt", "created_at", "id"})
METADATA_CONTROL_PROPERTIES = frozenset({"email", "revenue", "currency"})
_FORBIDDEN_KEY_CHARACTERS = re.compile(r"[.$]")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, kw_only=True)
class IntercomSettings(HTTPSettings):
    access_token: str = setting(
        label="Access token",
        secret=True,
        help="Developer Hub → your app → Authentication; needs write access to users, companies and events.",
    )
    region: str = setting(
        label="Data hosting region",
        default="us",
        choices=("us", "eu", "au"),
        help="Where your workspace is hosted (Settings → Workspace → Data hosting).",
    )
    api_version: str = setting(
        label="Intercom-Version",
        default="1.4",
        help="The API version header. identify and group use the create-or-update Users API, "
        "which Intercom serves under 1.x versions.",
    )


class Intercom(Destination[IntercomSettings]):
    slug = "intercom"
    name = "Intercom"
    category = Category.SUPPORT
    description = "Create or update Intercom users and their companies, and send data events."
    Settings = IntercomSettings
    batching = Batching(max_events=1)
    default_rate_limit = 166.0

    def identify(self, event: Event, settings: IntercomSettings) -> Payload:
        traits = _mapping(event.get("traits"))
        user = _user_identity(event, traits.get("email"))
        if not user:
            raise Skip("Intercom identifies users by userId or traits.email; this identify has neither")
        name = traits.get("name") or _full_name(traits)
        fields = {
            "name": name,
            "phone": traits.get("phone"),
            "signed_up_at": unix_seconds(traits.get("createdAt") or traits.get("created_at")),
            "unsubscribed_from_emails": _first_bool(
                traits, "unsubscribedFromEmails", "unsubscribed_from_emails"
            ),
        }
        user.update({key: value for key, value in fields.items() if value is not None})
        if traits.get("avatar"):
            user["avatar"] = {"type": "avatar", "image_url": traits["avatar"]}
        last_seen = unix_seconds(event.get("timestamp"))
        if last_seen is not None and _mapping(event.get("context")).get("active") is not False:
            user["last_request_at"] = last_seen
        company = traits.get("company")
        if isinstance(company, Mapping) and company.get("id"):
            user["companies"] = [_company(str(company["id"]), company)]
        custom = flat_attributes({key: value for key, value in traits.items() if key not in USER_TRAITS})
        if custom:
            user["custom_attributes"] = custom
        return Payload("users", user)

    def track(self, event: Event, settings: IntercomSettings) -> Payload:
        name = event.get("event")
        if not name:
            raise Skip("track has no event name")
        properties = _mapping(event.get("properties"))
        created_at = unix_seconds(event.get("timestamp"))
        if created_at is None:
            raise Skip("Intercom events need created_at; this track has no timestamp")
        context_email = _mapping(_mapping(event.get("context")).get("traits")).get("email")
        body: dict[str, Any] = {"event_name": str(name), "created_at": created_at}
        if event.get("userId"):
            body["user_id"] = str(event["userId"])
        elif properties.get("email") or context_email:
            body["email"] = str(properties.get("email") or context_email)
        else:
            raise Skip("Intercom ties events to users by userId or email; this track has neither")
        metadata = event_metadata(properties)
        if metadata:
            body["metadata"] = metadata
        return Payload("events", body)

    def group(self, event: Event, settings: IntercomSettings) -> Payload:
        group_id = event.get("groupId")
        if not group_id:
            raise Skip("group has no groupId")
        context_email = _mapping(_mapping(event.get("context")).get("traits")).get("email")
        user = _user_identity(event, context_email)
        if not user:
            raise Skip(
                "Intercom attaches companies to a user; this group has no userId or context.traits.email"
            )
        user["companies"] = [_company(str(group_id), _mapping(event.get("traits")))]
        return Payload("users", user)

    def request(self, endpoint: str, bodies: list[Any], settings: IntercomSettings) -> Request:
        [body] = bodies
        return Request.json(
            base_url(settings, REGION_HOSTS[settings.region]) + PATHS[endpoint],
            body,
            {
                "Authorization": f"Bearer {settings.access_token}",
                "Accept": "application/json",
                "Intercom-Version": settings.api_version,
            },
        )

    def classify(self, response: Response, request: Request, count: int) -> Outcome:
        if response.status == 409:
            return Outcome.retry(f"HTTP 409: {response.text[:200]}")
        if response.status == 404 and request.url.endswith(PATHS["events"]):
            return Outcome.retry(f"HTTP 404: the user is not (yet) in Intercom: {response.text[:200]}")
        return classify_status(response)


def event_metadata(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Event metadata: the monetary amount first, then the flattened properties, 10 keys at most."""
    metadata: dict[str, Any] = {}
    revenue = properties.get("revenue")
    if isinstance(revenue, int | float) and not isinstance(revenue, bool):
        metadata["price"] = {
            "amount": round(revenue * 100),
            "currency": str(properties.get("currency") or "USD"),
        }
    rest = {key: value for key, value in properties.items() if key not in METADATA_CONTROL_PROPERTIES}
    for key, value in flat_attributes(rest).items():
        if len(metadata) >= MAX_METADATA_KEYS:
            break
        if value is not None:
            metadata.setdefault(key, value)
    return metadata


def flat_attributes(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Intercom attribute values: flat, scalar, short strings, dates as unix seconds."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = _FORBIDDEN_KEY_CHARACTERS.sub("_", f"{prefix}_{key}" if prefix else str(key))
        if isinstance(value, Mapping):
            flat.update(flat_attributes(value, name))
        elif isinstance(value, str):
            flat[name] = _attribute_string(name, value)
        elif value is None or isinstance(value, bool | int | float):
            flat[name] = value
    return flat


def unix_seconds(value: Any) -> int | None:
    ms = parse_ms(value)
    return None if ms is None else ms // 1000


def _attribute_string(name: str, value: str) -> str | int:
    if name.endswith(("_at", "_date")) and _ISO.match(value) and (seconds := unix_seconds(value)) is not None:
        return seconds
    return value[:MAX_STRING_LENGTH]


def _company(company_id: str, traits: Mapping[str, Any]) -> dict[str, Any]:
    company: dict[str, Any] = {"company_id": company_id}
    company.update({COMPANY_TRAITS[key]: value for key, value in traits.items() if key in COMPANY_TRAITS})
    created = unix_seconds(traits.get("createdAt") or traits.get("created_at"))
    if created is not None:
        company["remote_created_at"] = created
    custom = {key: value for key, value in traits.items() if key not in COMPANY_CONTROL_TRAITS}
    if custom:
        company["custom_attributes"] = flat_attributes(custom)
    return company


def _user_identity(event: Event, email: Any) -> dict[str, Any]:
    if event.get("userId"):
        identity = {"user_id": str(event["userId"])}
        if isinstance(email, str) and email:
            identity["email"] = email
        return identity
    return {"email": email} if isinstance(email, str) and email else {}


def _full_name(traits: Mapping[str, Any]) -> str | None:
    first = traits.get("firstName") or traits.get("first_name")
    last = traits.get("lastName") or traits.get("last_name")
    name = " ".join(str(part) for part in (first, last) if part)
    return name or None


def _first_bool(traits: Mapping[str, Any], *names: str) -> bool | None:
    return next((traits[name] for name in names if isinstance(traits.get(name), bool)), None)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = Intercom()
