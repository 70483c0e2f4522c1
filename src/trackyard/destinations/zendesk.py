"""Zendesk Support: end users (create or update) and organizations.

Wire contract and Segment's mappings: destinations-marketing.md §7, appendix C.7.
Base URL `https://<subdomain>.zendesk.com` (or `base_url`); auth is HTTP Basic with
`<agent email>/token:<API token>`, Zendesk's API-token form.

Decisions:
* identify → `POST /api/v2/users/create_or_update.json` `{"user": {...}}`, which Zendesk
  matches by external_id, then email (201 created, 200 updated). Fields: external_id ←
  userId, email ← traits.email, name ← traits.name, else firstName + lastName, else the
  email (Zendesk requires a name to create a user; an update without one keeps the old
  name), phone, time_zone ← traits.timezone, `verified: true` with the "verified" setting.
  No role is sent: new users are end-users, and an existing agent keeps its role. Custom
  user fields must exist in Zendesk, so traits reach `user_fields` only through the
  "user fields" setting (trait: field key). Identifier: userId, else traits.email;
  without either, skipped.
* Batching: with "batch size" 1 (the default) each identify is its own request and gets
  its own outcome. With a larger batch size (at most 100, Zendesk's limit), identifies go
  to `POST /api/v2/users/create_or_update_many.json` `{"users": [...]}` (a larger setting
  counts as 100). Zendesk answers with a `job_status` and processes the users in the background; a destination sends
  stateless requests and does not poll, so a queued job counts as delivered, and a user
  the job rejects is only visible in the job's results in Zendesk. Choose it for volume
  (one request per 100 users against the per-minute limit), not for per-user outcomes.
* group → `POST /api/v2/organizations/create_or_update.json` `{"organization": {...}}`,
  matched by external_id ← groupId; name ← traits.name (else the groupId; Zendesk requires
  a unique name), domain_names ← the host of traits.website, details ← traits.description,
  custom organization fields through the "organization fields" setting. The membership
  (`POST /organization_memberships.json`) is not created: it needs the Zendesk ids of the
  user and of the organization, which only the answers of earlier calls carry, and a
  destination sends one stateless request per payload. With `domain_names`, Zendesk adds
  users whose email is at that domain to the organization itself.
* track (Sunshine events, a separate product that needs the Zendesk user id first), page,
  screen and alias are not taken.
* Responses: 200/201 delivered (for the bulk endpoint, the job was queued). 422
  (RecordInvalid, e.g. a duplicate organization name) and other 4xx give up with
  Zendesk's details; 409 (a concurrent update of the same record) is retried; 429 is
  retried after `Retry-After`; 5xx are retried.
* Rate limit: 3.3 requests/s, the Support API's 200 requests per minute of the smallest
  plan (Team); larger plans allow 400 to 2,500 per minute: raise it with the rate limit
  setting (appendix C.7: the live limit is in each answer's `X-Rate-Limit` header).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
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
    Verdict,
    base_url,
    classify_status,
    setting,
)

PATHS = {
    "users": "/api/v2/users/create_or_update.json",
    "users_many": "/api/v2/users/create_or_update_many.json",
    "organizations": "/api/v2/organizations/create_or_update.json",
}
MAX_BULK_USERS = 100


@dataclass(frozen=True, kw_only=True)
class ZendeskSettings(HTTPSettings):
    subdomain: str = setting(label="Subdomain", help="The <subdomain> of https://<subdomain>.zendesk.com.")
    email: str = setting(
        label="Agent email", help="The email of the admin or agent the API token belongs to."
    )
    api_token: str = setting(
        label="API token",
        secret=True,
        help="Admin Center → Apps and integrations → Zendesk API → API tokens.",
    )
    verified: bool = setting(
        label="Mark emails verified",
        default=False,
        help="Create users with their email already verified (no verification email is sent).",
    )
    user_fields: dict[str, str] = setting(
        label="User fields",
        default={},
        help="Traits to send as custom user fields, as trait: field key. The fields must exist in Zendesk.",
    )
    organization_fields: dict[str, str] = setting(
        label="Organization fields",
        default={},
        help="Group traits to send as custom organization fields, as trait: field key.",
    )
    batch_size: int = setting(
        label="Batch size",
        default=1,
        help="1 sends each user on its own, with its own outcome; up to 100 uses Zendesk's bulk "
        "create_or_update_many job, whose per-user results are only visible in Zendesk.",
    )


class Zendesk(Destination[ZendeskSettings]):
    slug = "zendesk"
    name = "Zendesk"
    category = Category.SUPPORT
    description = "Create or update Zendesk end users and organizations."
    Settings = ZendeskSettings
    default_rate_limit = 3.3

    def batching_policy(self, settings: ZendeskSettings) -> Batching:
        size = min(max(1, settings.batch_size), MAX_BULK_USERS)
        return Batching(max_events=size, max_bytes=1_000_000, max_wait=1.0)

    def identify(self, event: Event, settings: ZendeskSettings) -> Payload:
        traits = _mapping(event.get("traits"))
        email = traits.get("email") if isinstance(traits.get("email"), str) else None
        if not event.get("userId") and not email:
            raise Skip(
                "Zendesk matches users by userId (external_id) or traits.email; this identify has neither"
            )
        user: dict[str, Any] = {}
        if event.get("userId"):
            user["external_id"] = str(event["userId"])
        if email:
            user["email"] = email
        name = traits.get("name") or _full_name(traits) or email
        if name:
            user["name"] = str(name)
        if traits.get("phone"):
            user["phone"] = str(traits["phone"])
        if traits.get("timezone"):
            user["time_zone"] = str(traits["timezone"])
        if settings.verified:
            user["verified"] = True
        fields = _mapped(traits, settings.user_fields)
        if fields:
            user["user_fields"] = fields
        return Payload("users_many" if settings.batch_size > 1 else "users", user)

    def group(self, event: Event, settings: ZendeskSettings) -> Payload:
        group_id = event.get("groupId")
        if not group_id:
            raise Skip("Zendesk matches organizations by groupId (external_id); this group has none")
        traits = _mapping(event.get("traits"))
        organization: dict[str, Any] = {
            "external_id": str(group_id),
            "name": str(traits.get("name") or group_id),
        }
        domain = _domain(traits.get("website"))
        if domain:
            organization["domain_names"] = [domain]
        if traits.get("description"):
            organization["details"] = str(traits["description"])
        fields = _mapped(traits, settings.organization_fields)
        if fields:
            organization["organization_fields"] = fields
        return Payload("organizations", organization)

    def request(self, endpoint: str, bodies: list[Any], settings: ZendeskSettings) -> Request:
        url = base_url(settings, f"https://{settings.subdomain}.zendesk.com") + PATHS[endpoint]
        data = {"users": bodies} if endpoint == "users_many" else {_ENVELOPES[endpoint]: bodies[0]}
        return Request.json(url, data, {"Authorization": basic_auth(settings)})

    def classify(self, response: Response, request: Request, count: int) -> Outcome:
        if response.status == 409:
            return Outcome.retry(f"HTTP 409: {response.text[:200]}")
        outcome = classify_status(response)
        body = response.json()
        if (
            outcome.verdict is Verdict.DELIVERED
            and isinstance(body, dict)
            and isinstance(body.get("job_status"), dict)
        ):
            return Outcome.delivered(f"HTTP {response.status}: job {body['job_status'].get('id')} queued")
        return outcome


_ENVELOPES = {"users": "user", "organizations": "organization"}


def basic_auth(settings: ZendeskSettings) -> str:
    token = base64.b64encode(f"{settings.email}/token:{settings.api_token}".encode()).decode()
    return f"Basic {token}"


def _mapped(traits: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    return {field: traits[trait] for trait, field in mapping.items() if traits.get(trait) is not None}


def _full_name(traits: Mapping[str, Any]) -> str | None:
    first = traits.get("firstName") or traits.get("first_name")
    last = traits.get("lastName") or traits.get("last_name")
    name = " ".join(str(part) for part in (first, last) if part)
    return name or None


def _domain(website: Any) -> str | None:
    if not isinstance(website, str) or not website.strip():
        return None
    text = website.strip()
    host = urlsplit(text if "//" in text else f"//{text}").hostname
    return host.removeprefix("www.") if host else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = Zendesk()
