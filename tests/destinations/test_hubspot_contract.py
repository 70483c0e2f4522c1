"""A fake HubSpot that checks the documented v3 contract, and our requests against it.

The contract (developers.hubspot.com: CRM batch upsert, custom event occurrences;
destinations-marketing.md §5): `Authorization: Bearer <token>` (401 INVALID_AUTHENTICATION
otherwise); JSON `{"inputs": [...]}` of 1 to 100 inputs (400 VALIDATION_ERROR otherwise).
CRM upserts: a unique `idProperty` (email for contacts, the account's unique company
property), a string `id`, `properties` of strings naming existing properties
(PROPERTY_DOESNT_EXIST), `date` properties in epoch ms at UTC midnight and `datetime` ones
in epoch ms; the same id twice in a batch refuses the batch. Answers 200 COMPLETE, or 207
with `errors[].context.objectWriteTraceId` (else `ids`) for the bad inputs. Events: a
defined `pe<hub id>_` event name, an email, `occurredAt` as ISO-8601 or epoch ms (not
seconds), at most 50 string properties with internal names; 204 without a body, or 400
naming the bad occurrences by uuid.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, Response, Verdict, parse_settings
from trackyard.destinations.hubspot import HubSpotSettings, destination

TOKEN, HUB_ID = "pat-na1-11111111-2222-3333-4444-555555555555", "20412345"
UPSERT_PATHS = {
    "/crm/v3/objects/contacts/batch/upsert": "contacts",
    "/crm/v3/objects/companies/batch/upsert": "companies",
}
EVENTS_PATH = "/events/v3/send/batch"
UNIQUE_PROPERTIES = {"contacts": {"email"}, "companies": {"segment_group_id"}}
PROPERTIES = {
    "contacts": {
        "email": "string",
        "firstname": "string",
        "lastname": "string",
        "phone": "string",
        "company": "string",
        "website": "string",
        "address": "string",
        "city": "string",
        "state": "string",
        "country": "string",
        "zip": "string",
        "lifecyclestage": "enumeration",
        "plan": "string",
        "signup_date": "datetime",
        "trial_end_date": "date",
    },
    "companies": {
        "name": "string",
        "description": "string",
        "phone": "string",
        "domain": "string",
        "industry": "enumeration",
        "numberofemployees": "number",
        "address": "string",
        "city": "string",
        "state": "string",
        "zip": "string",
        "country": "string",
        "lifecyclestage": "enumeration",
        "segment_group_id": "string",
    },
}
DEFINED_EVENTS = {
    f"pe{HUB_ID}_{name}"
    for name in (
        "product_viewed",
        "product_added",
        "checkout_started",
        "order_completed",
        "products_searched",
        "signed_up",
    )
}
MAX_INPUTS, MAX_EVENT_PROPERTIES = 100, 50
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
YEAR_2000_MS, YEAR_2100_MS = 946_684_800_000, 4_102_444_800_000


def hubspot_error(status: int, category: str, message: str, **extra: Any) -> Reply:
    return ok_json(
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        },
        status,
    )


def hubspot_contract(request: Captured) -> Reply:
    """Answer as HubSpot's batch upsert and event batch endpoints do."""
    if request.method != "POST" or (request.path not in UPSERT_PATHS and request.path != EVENTS_PATH):
        return hubspot_error(404, "OBJECT_NOT_FOUND", f"no route {request.method} {request.path}")
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return hubspot_error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
        )
    if not request.headers.get("content-type", "").startswith("application/json"):
        return hubspot_error(415, "VALIDATION_ERROR", "Content-Type must be application/json")
    try:
        inputs = orjson.loads(request.body)["inputs"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return hubspot_error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object with inputs")
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        return hubspot_error(400, "VALIDATION_ERROR", f"inputs must hold 1 to {MAX_INPUTS} items")
    if request.path == EVENTS_PATH:
        return events_reply(inputs)
    return upsert_reply(UPSERT_PATHS[request.path], inputs)


def upsert_reply(kind: str, inputs: list[Any]) -> Reply:
    ids = [item.get("id") for item in inputs if isinstance(item, dict)]
    if len(ids) != len(set(ids)):
        return hubspot_error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
    errors, results = [], []
    for item in inputs:
        problem = upsert_problem(kind, item)
        if problem:
            trace = item.get("objectWriteTraceId") if isinstance(item, dict) else None
            context = {"objectWriteTraceId": [trace]} if trace else {"ids": [str(item.get("id"))]}
            errors.append(
                {"status": "error", "category": "VALIDATION_ERROR", "message": problem, "context": context}
            )
        else:
            results.append({"id": str(len(results) + 1), "properties": item["properties"], "new": True})
    body = {"status": "COMPLETE", "results": results, "startedAt": "2026-11-28T10:00:06Z"}
    if errors:
        return ok_json({**body, "numErrors": len(errors), "errors": errors}, 207)
    return ok_json(body)


def upsert_problem(kind: str, item: Any) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("properties"), dict):
        return "each input needs properties"
    if item.get("idProperty") not in UNIQUE_PROPERTIES[kind]:
        return f"{item.get('idProperty')} is not a unique identifier property"
    if not isinstance(item.get("id"), str) or not item["id"]:
        return "id must be a non-empty string"
    if kind == "contacts" and not EMAIL.match(item["id"]):
        return f"Email address {item['id']} is invalid"
    for name, value in item["properties"].items():
        problem = property_problem(kind, name, value)
        if problem:
            return problem
    return ""


def property_problem(kind: str, name: str, value: Any) -> str:
    known = PROPERTIES[kind]
    if name not in known:
        return f'Property "{name}" does not exist (PROPERTY_DOESNT_EXIST)'
    if not isinstance(value, str):
        return f"Property {name}: values must be strings"
    if known[name] in ("date", "datetime"):
        if not value.isdigit() or not YEAR_2000_MS <= int(value) <= YEAR_2100_MS:
            return f"Property {name}: {value!r} is not a timestamp in milliseconds (INVALID_DATE)"
        if known[name] == "date" and int(value) % 86_400_000:
            return f"Property {name}: {value!r} is not midnight UTC (INVALID_DATE)"
    if known[name] == "number" and not re.fullmatch(r"-?\d+(\.\d+)?", value):
        return f"Property {name}: {value!r} is not a number"
    return ""


def events_reply(inputs: list[Any]) -> Reply:
    bad = [(item, problem) for item in inputs if (problem := event_problem(item))]
    if not bad:
        return 204, {}, b""
    return hubspot_error(
        400,
        "VALIDATION_ERROR",
        "; ".join(problem for _, problem in bad),
        errors=[
            {"message": problem, "context": {"uuid": [str(item.get("uuid"))]}}
            for item, problem in bad
            if isinstance(item, dict)
        ],
    )


def event_problem(item: Any) -> str:
    if not isinstance(item, dict):
        return "each input must be an object"
    if item.get("eventName") not in DEFINED_EVENTS:
        return f"Event {item.get('eventName')!r} is not defined"
    if not any(item.get(key) for key in ("email", "utk", "objectId")):
        return "an email, utk or objectId is required"
    if "occurredAt" in item and not occurred_at_valid(item["occurredAt"]):
        return f"occurredAt {item['occurredAt']!r} is not ISO-8601 or epoch milliseconds"
    if "uuid" in item:
        try:
            uuid.UUID(str(item["uuid"]))
        except ValueError:
            return "uuid must be a UUID"
    properties = item.get("properties", {})
    if not isinstance(properties, dict) or len(properties) > MAX_EVENT_PROPERTIES:
        return f"an occurrence takes at most {MAX_EVENT_PROPERTIES} properties"
    for name, value in properties.items():
        if not PROPERTY_NAME.match(name) or not isinstance(value, str):
            return f"property {name!r} must be an internal name with a string value"
    return ""


def occurred_at_valid(value: Any) -> bool:
    if isinstance(value, int):
        return YEAR_2000_MS <= value <= YEAR_2100_MS  # seconds would land in 1970
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
        except ValueError:
            return False
    return False


def settings(**overrides: str) -> HubSpotSettings:
    return parse_settings(
        HubSpotSettings,
        {"access_token": TOKEN, "hub_id": HUB_ID, "contact_properties": "plan: plan", **overrides},
    )


def send(vendor: FakeVendor, request: Request) -> httpx.Response:
    """Send a rendered request to the fake (whose URL replaces the host), as the engine would."""
    path = "/" + request.url.split("://", 1)[1].split("/", 1)[1]
    return httpx.request(
        request.method, vendor.url + path, headers=dict(request.headers), content=request.body
    )


def as_response(reply: httpx.Response) -> Response:
    return Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content)


def taken(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] in ("identify", "track", "group")]


def with_inputs(request: Request, inputs: list[Any]) -> Request:
    return Request(request.method, request.url, request.headers, orjson.dumps({"inputs": inputs}))


def test_the_whole_spec_scenario_is_accepted_by_the_contract():
    with FakeVendor(hubspot_contract) as vendor:
        for request in render(destination, settings(), taken(spec_events.scenario())):
            reply = send(vendor, request)
            assert reply.status_code in (200, 204), reply.text
            count = len(orjson.loads(request.body)["inputs"])
            outcome = destination.classify(as_response(reply), request, count)
            assert outcome.verdict is Verdict.DELIVERED


def test_a_wrong_token_is_refused_and_given_up():
    [request] = render(destination, settings(access_token="pat-wrong"), [spec_events.identify()])
    with FakeVendor(hubspot_contract) as vendor:
        reply = send(vendor, request)
    assert reply.status_code == 401 and reply.json()["category"] == "INVALID_AUTHENTICATION"
    assert destination.classify(as_response(reply), request, 1).verdict is Verdict.GIVE_UP


def test_an_unknown_property_fails_only_its_contact():
    other = spec_events.identify()
    other["traits"]["email"] = "other@example.com"
    request = render(destination, settings(), [spec_events.identify(), other])[0]
    inputs = orjson.loads(request.body)["inputs"]
    inputs[1]["properties"]["login_count"] = "9"  # not a property of this account
    broken = with_inputs(request, inputs)
    with FakeVendor(hubspot_contract) as vendor:
        reply = send(vendor, broken)
    assert reply.status_code == 207
    outcomes = destination.classify(as_response(reply), broken, 2)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.DELIVERED, Verdict.GIVE_UP]
    assert "PROPERTY_DOESNT_EXIST" in outcomes[1].reason


def test_dates_must_be_epoch_ms_and_date_properties_at_midnight():
    event = spec_events.identify()
    event["traits"]["trial_ends"] = "2026-12-01T15:00:00Z"
    mapping = "createdAt: signup_date; trial_ends: trial_end_date"
    with FakeVendor(hubspot_contract) as vendor:
        undeclared = render(destination, settings(contact_properties=mapping), [event])[0]
        assert send(vendor, undeclared).status_code == 207  # a datetime sent to a date property
        declared = render(
            destination, settings(contact_properties=mapping, date_properties="trial_end_date"), [event]
        )[0]
        assert send(vendor, declared).status_code == 200
        seconds = orjson.loads(declared.body)["inputs"]
        seconds[0]["properties"]["signup_date"] = "1768469400"
        assert send(vendor, with_inputs(declared, seconds)).status_code == 207


def test_event_timestamps_in_seconds_and_undefined_events_are_refused():
    [request] = render(destination, settings(), [spec_events.signed_up(), spec_events.products_searched()])
    inputs = orjson.loads(request.body)["inputs"]
    inputs[0]["occurredAt"] = 1795860005
    inputs[1]["eventName"] = f"pe{HUB_ID}_never_defined"
    broken = with_inputs(request, inputs)
    with FakeVendor(hubspot_contract) as vendor:
        reply = send(vendor, broken)
    assert reply.status_code == 400
    outcomes = destination.classify(as_response(reply), broken, 2)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.GIVE_UP, Verdict.GIVE_UP]


def test_batches_over_100_inputs_and_unmerged_duplicates_are_refused():
    [request] = render(destination, settings(), [spec_events.identify()])
    [one] = orjson.loads(request.body)["inputs"]
    with FakeVendor(hubspot_contract) as vendor:
        too_many = [{**one, "id": f"u{index}@example.com"} for index in range(101)]
        assert send(vendor, with_inputs(request, too_many)).status_code == 400
        duplicated = send(vendor, with_inputs(request, [one, one]))
        assert duplicated.status_code == 400 and "Duplicate IDs" in duplicated.text
        merged = render(destination, settings(), [spec_events.identify(), spec_events.identify()])[0]
        assert send(vendor, merged).status_code == 200
