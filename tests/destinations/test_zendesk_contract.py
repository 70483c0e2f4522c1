"""A fake Zendesk Support API that checks the documented contract, and our requests against it.

The contract (developer.zendesk.com Users and Organizations APIs; destinations-marketing.md
§7): HTTP Basic `<agent email>/token:<API token>` (401 "Couldn't authenticate you"
otherwise); JSON bodies. `users/create_or_update.json` `{"user"}` matches by external_id,
then email; a new user needs a name (422 RecordInvalid); custom `user_fields` must exist;
201 created or 200 updated. `users/create_or_update_many.json` `{"users"}` takes at most
100 users and answers 200 with a queued `job_status`. `organizations/create_or_update.json`
`{"organization"}` matches by external_id; names are unique (422 DuplicateValue).
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, Response, Verdict, parse_settings
from trackyard.destinations.zendesk import ZendeskSettings, destination

SUBDOMAIN, AGENT, API_TOKEN = "initech", "agent@initech.example", "6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv"
USER_FIELDS = {"plan_tier", "login_count"}
MAX_BULK_USERS = 100


def record_invalid(field: str, description: str, error: str = "InvalidValue") -> Reply:
    return ok_json(
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field: [{"description": description, "error": error}]},
        },
        422,
    )


class ZendeskContract:
    """Answers as Zendesk's create-or-update endpoints do, remembering the records they made."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.organizations: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        expected = "Basic " + base64.b64encode(f"{AGENT}/token:{API_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return ok_json({"error": "Couldn't authenticate you"}, 401)
        if request.method != "POST" or not request.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return ok_json({"error": "InvalidEndpoint", "description": "Not found"}, 404)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return ok_json({"error": "Unprocessable Entity", "description": "invalid JSON"}, 400)
        with self.lock:
            if request.path == "/api/v2/users/create_or_update.json" and isinstance(body.get("user"), dict):
                return self.upsert_user(body["user"])
            if request.path == "/api/v2/users/create_or_update_many.json" and isinstance(
                body.get("users"), list
            ):
                return self.queue_users(body["users"])
            if request.path == "/api/v2/organizations/create_or_update.json" and isinstance(
                body.get("organization"), dict
            ):
                return self.upsert_organization(body["organization"])
        return ok_json({"error": "InvalidEndpoint", "description": f"Not found: {request.path}"}, 404)

    def upsert_user(self, user: dict[str, Any]) -> Reply:
        problem = user_problem(user)
        if problem:
            return problem
        key = user.get("external_id") or user["email"]
        existing = self.users.get(key) or next(
            (
                known
                for known in self.users.values()
                if user.get("email") and known.get("email") == user["email"]
            ),
            None,
        )
        if existing is None and not user.get("name"):
            return record_invalid("name", "Name: is too short (minimum is 1 character)")
        record = {**(existing or {"id": 1000 + len(self.users), "role": "end-user"}), **user}
        self.users[key] = record
        return ok_json({"user": record}, 200 if existing else 201)

    def queue_users(self, users: list[Any]) -> Reply:
        if not 1 <= len(users) <= MAX_BULK_USERS:
            return ok_json(
                {"error": "InvalidValue", "description": f"Too many objects (max {MAX_BULK_USERS})"}, 400
            )
        for user in users:
            if not isinstance(user, dict) or not (user.get("external_id") or user.get("email")):
                return ok_json(
                    {"error": "InvalidValue", "description": "each user needs external_id or email"}, 400
                )
        job = {
            "id": f"job{len(users)}",
            "status": "queued",
            "total": len(users),
            "url": "https://x/job_statuses/1",
        }
        return ok_json({"job_status": job})

    def upsert_organization(self, organization: dict[str, Any]) -> Reply:
        name = organization.get("name")
        if not isinstance(name, str) or not name:
            return record_invalid("name", "Name: cannot be blank", "BlankValue")
        key = organization.get("external_id")
        taken = any(org["name"] == name and known != key for known, org in self.organizations.items())
        if taken:
            return record_invalid("name", f"Name: {name} has already been taken", "DuplicateValue")
        existing = self.organizations.get(key)
        self.organizations[key] = {**(existing or {"id": 2000 + len(self.organizations)}), **organization}
        return ok_json({"organization": self.organizations[key]}, 200 if existing else 201)


def user_problem(user: dict[str, Any]) -> Reply | None:
    if not user.get("external_id") and not user.get("email"):
        return record_invalid("email", "Email: cannot be blank when there is no external_id")
    fields = user.get("user_fields", {})
    unknown = sorted(set(fields) - USER_FIELDS) if isinstance(fields, dict) else ["user_fields"]
    if unknown:
        return record_invalid("user_fields", f"User field {unknown[0]} does not exist")
    if "verified" in user and not isinstance(user["verified"], bool):
        return record_invalid("verified", "verified must be a boolean")
    return None


def settings(**overrides: str) -> ZendeskSettings:
    return parse_settings(
        ZendeskSettings, {"subdomain": SUBDOMAIN, "email": AGENT, "api_token": API_TOKEN, **overrides}
    )


def taken(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] in ("identify", "group")]


def send(vendor: FakeVendor, request: Request) -> httpx.Response:
    """Send a rendered request to the fake (whose URL replaces the host), as the engine would."""
    path = "/" + request.url.split("://", 1)[1].split("/", 1)[1]
    return httpx.request(
        request.method, vendor.url + path, headers=dict(request.headers), content=request.body
    )


def as_response(reply: httpx.Response) -> Response:
    return Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content)


def with_body(request: Request, body: Any) -> Request:
    return Request(request.method, request.url, request.headers, orjson.dumps(body))


def test_the_whole_spec_scenario_is_accepted_by_the_contract():
    with FakeVendor(ZendeskContract()) as vendor:
        for request in render(destination, settings(), taken(spec_events.scenario())):
            reply = send(vendor, request)
            assert reply.status_code == 201, reply.text
            assert destination.classify(as_response(reply), request, 1).verdict is Verdict.DELIVERED
        again = render(destination, settings(), [spec_events.identify()])[0]
        assert send(vendor, again).status_code == 200  # the same user: updated


def test_a_wrong_token_is_refused_and_given_up():
    [request] = render(destination, settings(api_token="wrong"), [spec_events.identify()])
    with FakeVendor(ZendeskContract()) as vendor:
        reply = send(vendor, request)
    assert reply.status_code == 401
    assert destination.classify(as_response(reply), request, 1).verdict is Verdict.GIVE_UP


def test_a_new_user_without_a_name_is_invalid_and_given_up():
    [request] = render(destination, settings(), [spec_events.identify()])
    user = orjson.loads(request.body)["user"]
    del user["name"]
    broken = with_body(request, {"user": user})
    with FakeVendor(ZendeskContract()) as vendor:
        reply = send(vendor, broken)
    assert reply.status_code == 422 and "RecordInvalid" in reply.text
    assert destination.classify(as_response(reply), broken, 1).verdict is Verdict.GIVE_UP


def test_unknown_user_fields_are_refused_and_mapped_ones_accepted():
    mapped = render(destination, settings(user_fields="plan: plan_tier"), [spec_events.identify()])[0]
    unknown = render(destination, settings(user_fields="plan: plan"), [spec_events.identify()])[0]
    with FakeVendor(ZendeskContract()) as vendor:
        assert send(vendor, mapped).status_code == 201
        assert send(vendor, unknown).status_code == 422


def test_a_duplicate_organization_name_is_given_up():
    other = spec_events.group()
    other["groupId"] = "another-group"
    first, second = render(destination, settings(), [spec_events.group(), other])
    with FakeVendor(ZendeskContract()) as vendor:
        assert send(vendor, first).status_code == 201
        reply = send(vendor, second)
    outcome = destination.classify(as_response(reply), second, 1)
    assert (reply.status_code, outcome.verdict) == (422, Verdict.GIVE_UP)
    assert "DuplicateValue" in outcome.reason


def test_bulk_jobs_take_at_most_100_users():
    users = [spec_events.identify() for _ in range(101)]
    for index, event in enumerate(users):
        event["userId"] = f"user-{index}"
    full, rest = render(destination, settings(batch_size="100"), users)
    with FakeVendor(ZendeskContract()) as vendor:
        reply = send(vendor, full)
        assert reply.status_code == 200 and reply.json()["job_status"]["status"] == "queued"
        assert destination.classify(as_response(reply), full, 100).verdict is Verdict.DELIVERED
        assert send(vendor, rest).status_code == 200
        everyone = orjson.loads(full.body)["users"] + orjson.loads(rest.body)["users"]
        assert send(vendor, with_body(full, {"users": everyone})).status_code == 400
