"""A fake Intercom that checks the documented 1.x contract, and our requests against it.

The contract (developers.intercom.com, API 1.4 users and data events; destinations-marketing.md
§6): `Authorization: Bearer <token>` (401 `error.list` `unauthorized` otherwise); a 1.x
`Intercom-Version` for the Users API (2.x has no Users resource); JSON bodies.
`POST /users`: `user_id` or `email`; `signed_up_at`/`last_request_at` in unix seconds;
custom attributes flat (no objects or lists), strings of at most 255 characters, names
without "." or "$"; companies with a `company_id`. Answers 200 with the user.
`POST /events`: `event_name`, `created_at` in unix seconds, `user_id`/`email`/`id`;
metadata flat, whose objects are only rich links `{url, value}` or monetary amounts
`{amount (integer cents), currency}`. Answers 202 without a body. Violations: 400
`parameter_invalid` (or `parameter_not_found`).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, Response, Verdict, parse_settings
from trackyard.destinations.intercom import IntercomSettings, destination

TOKEN = "dG9rOmV4YW1wbGU6MTIzNDU2Nzg5MDE="
YEAR_2000, YEAR_2100 = 946_684_800, 4_102_444_800


def error_list(status: int, code: str, message: str) -> Reply:
    return ok_json(
        {
            "type": "error.list",
            "request_id": uuid.uuid4().hex,
            "errors": [{"code": code, "message": message}],
        },
        status,
    )


def intercom_contract(request: Captured) -> Reply:
    """Answer as Intercom's 1.x /users and /events endpoints do."""
    if request.method != "POST" or request.path not in ("/users", "/events"):
        return error_list(404, "not_found", f"no route {request.method} {request.path}")
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return error_list(401, "unauthorized", "Access Token Invalid")
    version = request.headers.get("intercom-version", "")
    if request.path == "/users" and not version.startswith("1."):
        return error_list(400, "intercom_version_invalid", f"Users is not available in version {version!r}")
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return error_list(400, "parameter_invalid", "body must be JSON")
    if not isinstance(body, dict):
        return error_list(400, "parameter_invalid", "body must be an object")
    problem = user_problem(body) if request.path == "/users" else event_problem(body)
    if problem:
        return error_list(400, "parameter_invalid", problem)
    if request.path == "/events":
        return 202, {}, b""
    return ok_json({"type": "user", "id": uuid.uuid4().hex[:24], **body})


def user_problem(user: dict[str, Any]) -> str:
    if not user.get("user_id") and not user.get("email"):
        return "user_id or email is required"
    for field in ("signed_up_at", "last_request_at"):
        if field in user and not unix_seconds(user[field]):
            return f"{field} must be a unix timestamp in seconds; got {user[field]!r}"
    problem = attributes_problem(user.get("custom_attributes", {}))
    if problem:
        return problem
    for company in user.get("companies", []):
        if not isinstance(company, dict) or not company.get("company_id"):
            return "each company needs a company_id"
        if "remote_created_at" in company and not unix_seconds(company["remote_created_at"]):
            return "remote_created_at must be a unix timestamp in seconds"
        problem = attributes_problem(company.get("custom_attributes", {}))
        if problem:
            return problem
    return ""


def attributes_problem(attributes: Any) -> str:
    if not isinstance(attributes, dict):
        return "custom_attributes must be an object"
    for name, value in attributes.items():
        if "." in name or "$" in name:
            return f"custom attribute name {name!r} cannot contain '.' or '$'"
        if isinstance(value, dict | list):
            return f"custom attribute {name!r}: nested values are not supported"
        if isinstance(value, str) and len(value) > 255:
            return f"custom attribute {name!r} is longer than 255 characters"
    return ""


def event_problem(event: dict[str, Any]) -> str:
    if not isinstance(event.get("event_name"), str) or not event["event_name"]:
        return "event_name is required"
    if not unix_seconds(event.get("created_at")):
        return f"created_at must be a unix timestamp in seconds; got {event.get('created_at')!r}"
    if not any(event.get(key) for key in ("user_id", "email", "id")):
        return "user_id, email or id is required"
    metadata = event.get("metadata", {})
    if not isinstance(metadata, dict):
        return "metadata must be an object"
    for name, value in metadata.items():
        if isinstance(value, list) or (isinstance(value, dict) and not special_object(value)):
            return f"metadata {name!r}: nested JSON structure is not supported"
    return ""


def special_object(value: dict[str, Any]) -> bool:
    """A rich link or a monetary amount: the only objects Intercom takes as metadata."""
    if set(value) == {"url", "value"}:
        return True
    return set(value) == {"amount", "currency"} and isinstance(value["amount"], int) and value["amount"] >= 0


def unix_seconds(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and YEAR_2000 <= value <= YEAR_2100


def settings(**overrides: str) -> IntercomSettings:
    return parse_settings(IntercomSettings, {"access_token": TOKEN, **overrides})


def taken(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] in ("identify", "track", "group")]


def send(vendor: FakeVendor, request: Request) -> httpx.Response:
    """Send a rendered request to the fake (whose URL replaces the host), as the engine would."""
    path = "/" + request.url.split("://", 1)[1].split("/", 1)[1]
    return httpx.request(
        request.method, vendor.url + path, headers=dict(request.headers), content=request.body
    )


def as_response(reply: httpx.Response) -> Response:
    return Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content)


def with_body(request: Request, body: dict[str, Any]) -> Request:
    return Request(request.method, request.url, request.headers, orjson.dumps(body))


def test_the_whole_spec_scenario_is_accepted_by_the_contract():
    requests = render(destination, settings(), taken(spec_events.scenario()))
    assert len(requests) == 8
    with FakeVendor(intercom_contract) as vendor:
        for request in requests:
            reply = send(vendor, request)
            assert reply.status_code in (200, 202), reply.text
            assert destination.classify(as_response(reply), request, 1).verdict is Verdict.DELIVERED


def test_a_wrong_token_is_refused_and_given_up():
    [request] = render(destination, settings(access_token="wrong"), [spec_events.identify()])
    with FakeVendor(intercom_contract) as vendor:
        reply = send(vendor, request)
    assert (reply.status_code, reply.json()["errors"][0]["code"]) == (401, "unauthorized")
    assert destination.classify(as_response(reply), request, 1).verdict is Verdict.GIVE_UP


def test_millisecond_timestamps_and_nested_metadata_are_refused():
    [request] = render(destination, settings(), [spec_events.order_completed()])
    event = orjson.loads(request.body)
    with FakeVendor(intercom_contract) as vendor:
        in_ms = send(vendor, with_body(request, {**event, "created_at": event["created_at"] * 1000}))
        nested = send(vendor, with_body(request, {**event, "metadata": {"products": spec_events.PRODUCTS}}))
        cents_as_float = send(
            vendor, with_body(request, {**event, "metadata": {"price": {"amount": 25.0, "currency": "USD"}}})
        )
    assert [reply.status_code for reply in (in_ms, nested, cents_as_float)] == [400, 400, 400]
    assert "unix timestamp in seconds" in in_ms.text and "nested" in nested.text


def test_the_users_api_needs_a_1x_version():
    [request] = render(destination, settings(api_version="2.11"), [spec_events.identify()])
    with FakeVendor(intercom_contract) as vendor:
        reply = send(vendor, request)
    assert reply.status_code == 400
    assert destination.classify(as_response(reply), request, 1).verdict is Verdict.GIVE_UP


def test_nested_custom_attributes_are_refused_and_ours_are_flat():
    [request] = render(destination, settings(), [spec_events.identify()])
    user = orjson.loads(request.body)
    with FakeVendor(intercom_contract) as vendor:
        assert send(vendor, request).status_code == 200
        nested = {**user, "custom_attributes": {"address": {"city": "San Francisco"}}}
        assert send(vendor, with_body(request, nested)).status_code == 400
