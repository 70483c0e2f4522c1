"""Mailchimp: audience members, their tags and their events through the Marketing API 3.0.

Wire contract and Segment's mapping: destinations-marketing.md §12 and Segment's
Mailchimp destination documentation.

Decisions (the open questions of §12 and appendix C):
* identify → `PUT /lists/{list_id}/members/{subscriber_hash}`, the hash being the MD5
  of the lower-cased email: an idempotent upsert. `status_if_new` is `subscribed`, or
  `pending` with double opt-in (Mailchimp then sends the confirmation email), and applies
  to new members only, so an identify never re-subscribes someone who unsubscribed —
  what classic Segment achieves with a GET before each write. The batch endpoint
  (`POST /lists/{id}`, 500 members) is not used: its `status` would overwrite existing
  members' status. So one member travels per request and no partial failure can occur.
* Per-event options, as classic Segment: `integrations.Mailchimp` (or the classic key
  `MailChimp`) `.listId` replaces the audience, `.subscriptionStatus` (subscribed,
  unsubscribed, cleaned, pending) is sent as `status` and so changes an existing
  member's status too.
* Merge fields: FNAME ← firstName, LNAME ← lastName (or snake_case), PHONE ← phone,
  BIRTHDAY ← birthday as MM/DD, ADDRESS ← address (street → addr1, city, state,
  postalCode → zip, country) only when addr1, city, state and zip are all known, as
  Mailchimp requires. Every other trait becomes the merge tag Segment makes of it: its
  letters and digits, upper-cased, cut to 10 characters (`createdAt` → CREATEDAT);
  booleans and null are sent as strings; arrays and objects are left out (Mailchimp
  takes neither). Mailchimp ignores tags the audience does not define.
* Tags: the `tags` setting plus the trait named by `tags_trait` (a list, or a
  comma-separated string) → `POST /lists/{id}/members/{hash}/tags`, each `active`; sent
  after the member's upsert (Mailchimp creates tags that do not exist yet).
* track → `POST /lists/{id}/members/{hash}/events` (on by default; `track_events`):
  the member is found by context.traits.email (else properties.email); `name` is the
  event name with every character outside letters, digits, `_` and `-` turned into `_`,
  cut to 30 (`Order Completed` → `Order_Completed`); `properties` are strings (numbers,
  booleans, arrays and objects as JSON; null left out); `occurred_at` is the timestamp
  (ISO-8601, to the second); `is_syncing` false, so Mailchimp automations may fire.
* Identifier: the email. An identify or track without one is skipped with a reason;
  page, screen, group and alias are not taken (Segment's Mailchimp takes identify only).
* Host: the data centre is the API key's suffix (`…-us6` → `https://us6.api.mailchimp.com/3.0`),
  or `base_url`. Basic auth with any user name and the API key as password.
* Limits: Mailchimp caps concurrency (10 connections per API key; the default 4 stays
  below), not requests per second, so there is no default rate. Responses: 2xx
  delivered; a 404 for a member's tags or events is retried (the upsert sent just before
  may still be on its way; the retry window ends it after four hours); other 4xx
  (problem+json `title`/`detail`: "Member Exists", "Invalid Resource", "Forgotten Email
  Not Subscribed", a wrong audience) give up; 408/423/429 and 5xx are retried.
"""

from __future__ import annotations

import base64
import hashlib
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
    setting,
)
from trackyard.spec.timestamps import parse_ms

MEMBER, TAGS, EVENTS = "member", "tags", "events"
STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending"})
INTEGRATION_KEYS = ("Mailchimp", "MailChimp")
MAX_TAG_LENGTH = 10
MAX_EVENT_NAME = 30
ADDRESS_FIELDS = {
    "addr1": ("street", "addr1", "line1"),
    "addr2": ("addr2", "line2"),
    "city": ("city",),
    "state": ("state",),
    "zip": ("postalCode", "postal_code", "zip"),
    "country": ("country",),
}
REQUIRED_ADDRESS_FIELDS = ("addr1", "city", "state", "zip")
STANDARD_TRAITS = frozenset(
    {"email", "firstName", "first_name", "lastName", "last_name", "phone", "birthday", "address"}
)

_DATA_CENTRE = re.compile(r"-([a-z]+\d+)$")
_NOT_TAG = re.compile(r"[^A-Za-z0-9]")
_NOT_EVENT_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, kw_only=True)
class MailchimpSettings(HTTPSettings):
    api_key: str = setting(
        label="API key",
        secret=True,
        help="Account → Extras → API keys; ends with your data centre, e.g. …-us6.",
    )
    list_id: str = setting(label="Audience ID", help="Audience → Settings → Audience name and defaults.")
    double_opt_in: bool = setting(
        label="Double opt-in",
        default=False,
        help="New members are 'pending' and get Mailchimp's confirmation email instead of being subscribed.",
    )
    tags: list[str] = setting(label="Tags", default=[], help="Tags given to every member identify sends.")
    tags_trait: str = setting(
        label="Tags trait",
        default="tags",
        help="The trait that holds a member's tags (a list, or names separated by commas).",
    )
    track_events: bool = setting(
        label="Send events",
        default=True,
        help="track calls become member events (the member must be in the audience).",
    )

    def __post_init__(self) -> None:
        if not _DATA_CENTRE.search(self.api_key.strip()):
            raise SettingsError(
                "mailchimp: setting 'api_key' must end with its data centre, such as …-us6 "
                "(copy the whole key from Mailchimp)"
            )


class Mailchimp(Destination[MailchimpSettings]):
    slug = "mailchimp"
    name = "Mailchimp"
    aliases = ("MailChimp",)
    category = Category.EMAIL
    description = "Email marketing: audience members, merge fields, tags and events in Mailchimp."
    Settings = MailchimpSettings
    batching = Batching(max_events=1, max_bytes=1_000_000, max_wait=0.0)
    default_rate_limit = 0.0
    dedupe_field = ""

    def identify(self, event: Event, settings: MailchimpSettings) -> list[Payload]:
        traits = _mapping(event.get("traits"))
        email = traits.get("email") or _context_traits(event).get("email")
        if not email:
            raise Skip("Mailchimp keys audience members by email; this identify has no traits.email")
        options = _options(event)
        address = _address(str(email), options, settings)
        member: dict[str, Any] = {
            "email_address": str(email).strip(),
            "status_if_new": "pending" if settings.double_opt_in else "subscribed",
            "merge_fields": merge_fields(traits, settings),
        }
        if options.get("subscriptionStatus") in STATUSES:
            member["status"] = options["subscriptionStatus"]
        payloads = [Payload(MEMBER, {**address, "body": member})]
        tags = _tags(traits, settings)
        if tags:
            body = {"tags": [{"name": tag, "status": "active"} for tag in tags], "is_syncing": False}
            payloads.append(Payload(TAGS, {**address, "body": body}))
        return payloads

    def track(self, event: Event, settings: MailchimpSettings) -> Payload:
        if not settings.track_events:
            raise Skip("track calls are not sent: the 'send events' setting is off")
        properties = _mapping(event.get("properties"))
        email = _context_traits(event).get("email") or properties.get("email")
        if not email:
            raise Skip("Mailchimp finds members by email; this track has no context.traits.email")
        name = event_name(str(event.get("event") or ""))
        if len(name) < 2:
            raise Skip("Mailchimp event names have 2 to 30 characters; this track's name is too short")
        body = {
            "name": name,
            "properties": _string_properties(properties),
            "occurred_at": _occurred_at(event),
            "is_syncing": False,
        }
        return Payload(EVENTS, {**_address(str(email), _options(event), settings), "body": body})

    def page(self, event: Event, settings: MailchimpSettings) -> Payload:
        raise Skip("Mailchimp takes no page calls (Segment's Mailchimp destination takes identify)")

    def screen(self, event: Event, settings: MailchimpSettings) -> Payload:
        raise Skip("Mailchimp takes no screen calls (Segment's Mailchimp destination takes identify)")

    def group(self, event: Event, settings: MailchimpSettings) -> Payload:
        raise Skip("Mailchimp audiences have no groups; Segment's Mailchimp destination takes no group calls")

    def alias(self, event: Event, settings: MailchimpSettings) -> Payload:
        raise Skip("Mailchimp keys members by email; Segment's Mailchimp destination takes no alias")

    def request(self, endpoint: str, bodies: list[Any], settings: MailchimpSettings) -> Request:
        [payload] = bodies
        path = f"/lists/{payload['list_id']}/members/{payload['subscriber_hash']}"
        suffix = "" if endpoint == MEMBER else f"/{endpoint}"
        url = base_url(settings, api_root(settings.api_key)) + path + suffix
        headers = {"Authorization": basic_auth(settings.api_key)}
        return Request.json(url, payload["body"], headers, method="PUT" if endpoint == MEMBER else "POST")

    def classify(self, response: Response, request: Request, count: int) -> Outcome:
        if response.status == 404 and request.url.endswith((f"/{TAGS}", f"/{EVENTS}")):
            return Outcome.retry(f"HTTP 404: the member is not in the audience (yet): {_problem(response)}")
        if 400 <= response.status < 500 and response.status not in RETRYABLE_STATUSES:
            return Outcome.give_up(f"HTTP {response.status}: {_problem(response)}")
        return classify_status(response)


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased email."""
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def api_root(api_key: str) -> str:
    """`https://<dc>.api.mailchimp.com/3.0`, the data centre being the key's suffix."""
    match = _DATA_CENTRE.search(api_key.strip())
    if match is None:
        raise SettingsError("mailchimp: setting 'api_key' must end with its data centre, such as …-us6")
    return f"https://{match.group(1)}.api.mailchimp.com/3.0"


def basic_auth(api_key: str) -> str:
    token = base64.b64encode(f"trackyard:{api_key.strip()}".encode()).decode()
    return f"Basic {token}"


def merge_fields(traits: Mapping[str, Any], settings: MailchimpSettings) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in traits.items():
        tag = merge_tag(key)
        if key in STANDARD_TRAITS or key == settings.tags_trait or not tag:
            continue
        if isinstance(value, bool) or value is None:
            fields[tag] = orjson.dumps(value).decode()
        elif isinstance(value, str | int | float):
            fields[tag] = value
    standard = {
        "FNAME": traits.get("firstName") or traits.get("first_name"),
        "LNAME": traits.get("lastName") or traits.get("last_name"),
        "PHONE": traits.get("phone"),
        "BIRTHDAY": _birthday(traits.get("birthday")),
        "ADDRESS": _merge_address(_mapping(traits.get("address"))),
    }
    fields.update({tag: value for tag, value in standard.items() if value is not None})
    return fields


def merge_tag(trait: str) -> str:
    """Segment's merge tag for a trait: its letters and digits, upper-cased, at most 10."""
    return _NOT_TAG.sub("", trait).upper()[:MAX_TAG_LENGTH]


def event_name(name: str) -> str:
    """A Mailchimp event name: letters, digits, `_` and `-` only, at most 30 characters."""
    return _NOT_EVENT_NAME.sub("_", name.strip())[:MAX_EVENT_NAME]


def _address(email: str, options: Mapping[str, Any], settings: MailchimpSettings) -> dict[str, str]:
    list_id = options.get("listId") if isinstance(options.get("listId"), str) else settings.list_id
    return {"list_id": str(list_id), "subscriber_hash": subscriber_hash(email)}


def _options(event: Event) -> dict[str, Any]:
    integrations = _mapping(event.get("integrations"))
    return next(
        (integrations[key] for key in INTEGRATION_KEYS if isinstance(integrations.get(key), dict)), {}
    )


def _tags(traits: Mapping[str, Any], settings: MailchimpSettings) -> list[str]:
    given = traits.get(settings.tags_trait)
    if isinstance(given, str):
        given = given.split(",")
    names = [*settings.tags, *(given if isinstance(given, list) else [])]
    cleaned = [str(name).strip() for name in names if isinstance(name, str | int) and str(name).strip()]
    return list(dict.fromkeys(cleaned))


def _birthday(value: Any) -> str | None:
    ms = parse_ms(value)
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%m/%d")


def _merge_address(address: Mapping[str, Any]) -> dict[str, str] | None:
    merged = {}
    for field, keys in ADDRESS_FIELDS.items():
        value = next((address[key] for key in keys if address.get(key) not in (None, "")), None)
        if value is not None:
            merged[field] = str(value)
    return merged if all(field in merged for field in REQUIRED_ADDRESS_FIELDS) else None


def _string_properties(properties: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else orjson.dumps(value).decode()
        for key, value in properties.items()
        if value is not None
    }


def _occurred_at(event: Event) -> str:
    ms = parse_ms(event.get("timestamp"))
    if ms is None:
        raise Skip("the event has no valid timestamp")
    return datetime.fromtimestamp(ms // 1000, UTC).isoformat()


def _problem(response: Response) -> str:
    """Mailchimp's problem+json in a few words: `title: detail`, or the raw excerpt."""
    body = response.json()
    if isinstance(body, dict) and (body.get("title") or body.get("detail")):
        words = ": ".join(str(body[key]) for key in ("title", "detail") if body.get(key))
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            words += " " + orjson.dumps(errors).decode()[:200]
        return words
    return response.text[:200]


def _context_traits(event: Event) -> dict[str, Any]:
    return _mapping(_mapping(event.get("context")).get("traits"))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = Mailchimp()
