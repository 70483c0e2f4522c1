"""A fake Customer.io Track API v2 that checks the documented contract, and our requests against it.

The contract (docs.customer.io Track API, `POST /api/v2/batch`; destinations-marketing.md §1):
Basic auth `site_id:api_key` (401 `{"meta":{"error":…}}` otherwise); a JSON body
`{"batch": [...]}` under 500 KB (413 otherwise); each item under 32 KB with a known
`type`/`action`, exactly one person identifier (or the object's type and id), a `name` for
events, a ULID `id`, and unix-seconds `timestamp`/`created_at`/`last_used`. Bad items do
not fail the batch: the answer is 207 `{"errors": [{"batch_index", "reason", "field", "message"}]}`.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, Response, Verdict, parse_settings
from trackyard.destinations.customerio import CustomerIOSettings, destination

SITE_ID, API_KEY = "site-1", "key-1"
MAX_REQUEST_BYTES, MAX_ITEM_BYTES = 500_000, 32_000
PERSON_ACTIONS = {
    "identify",
    "event",
    "page",
    "screen",
    "merge",
    "add_device",
    "delete_device",
    "delete",
    "suppress",
    "unsuppress",
    "add_relationships",
    "delete_relationships",
}
OBJECT_ACTIONS = {"identify", "identify_anonymous", "delete", "add_relationships", "delete_relationships"}
PERSON_IDS = {"id", "email", "cio_id"}
NAMED_ACTIONS = {"event", "page", "screen"}
ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
YEAR_2000, YEAR_2100 = 946_684_800, 4_102_444_800


def meta_error(status: int, message: str) -> Reply:
    return ok_json({"meta": {"error": message}}, status)


def customerio_contract(request: Captured) -> Reply:
    """Answer as Customer.io's Track API v2 batch endpoint does."""
    if (request.method, request.path) != ("POST", "/api/v2/batch"):
        return meta_error(404, f"no route {request.method} {request.path}")
    expected = "Basic " + base64.b64encode(f"{SITE_ID}:{API_KEY}".encode()).decode()
    if request.headers.get("authorization") != expected:
        return meta_error(401, "Unauthorized request")
    if not request.headers.get("content-type", "").startswith("application/json"):
        return meta_error(400, "Content-Type must be application/json")
    if len(request.body) > MAX_REQUEST_BYTES:
        return meta_error(413, f"request body is {len(request.body)} bytes; the limit is 500kb")
    try:
        batch = orjson.loads(request.body).get("batch")
    except (orjson.JSONDecodeError, AttributeError):
        return meta_error(400, "body must be a JSON object")
    if not isinstance(batch, list) or not batch:
        return meta_error(400, "batch must be a non-empty array")
    errors = [
        {"batch_index": index, "reason": "invalid", "field": field, "message": message}
        for index, item in enumerate(batch)
        for field, message in [item_problem(item)]
        if field
    ]
    return ok_json({"errors": errors}, 207) if errors else ok_json({})


def item_problem(item: Any) -> tuple[str, str]:
    """The first contract violation of one batch item as (field, message); ("", "") when valid."""
    if not isinstance(item, dict):
        return "item", "must be an object"
    if len(orjson.dumps(item)) > MAX_ITEM_BYTES:
        return "item", "is larger than 32kb"
    kind, action = item.get("type"), item.get("action")
    allowed = {"person": PERSON_ACTIONS, "object": OBJECT_ACTIONS}.get(kind)
    if allowed is None or action not in allowed:
        return "action", f"unknown {kind}/{action}"
    problem = identifier_problem(item)
    if problem[0]:
        return problem
    if action in NAMED_ACTIONS and not (isinstance(item.get("name"), str) and item["name"]):
        return "name", "is required"
    if "id" in item and not (isinstance(item["id"], str) and ULID.match(item["id"])):
        return "id", "must be a ULID"
    attributes = item.get("attributes", {})
    if not isinstance(attributes, dict) or len(attributes) > 300:
        return "attributes", "must be an object of at most 300 attributes"
    device = item.get("device", {})
    if action == "add_device" and not (isinstance(device, dict) and device.get("token")):
        return "device.token", "is required"
    for field, value in (
        ("timestamp", item.get("timestamp")),
        ("attributes.created_at", attributes.get("created_at")),
        ("device.last_used", device.get("last_used")),
    ):
        if value is not None and not (isinstance(value, int) and YEAR_2000 <= value <= YEAR_2100):
            return field, f"must be a unix timestamp in seconds; got {value!r}"
    return "", ""


def identifier_problem(item: dict[str, Any]) -> tuple[str, str]:
    if item["action"] == "merge":
        for side in ("primary", "secondary"):
            if not single_person_id(item.get(side), PERSON_IDS):
                return side, "must hold exactly one of id, email, cio_id"
        return ("identifiers", "is not allowed on merge") if "identifiers" in item else ("", "")
    identifiers = item.get("identifiers")
    if item["type"] == "object":
        valid = isinstance(identifiers, dict) and set(identifiers) == {"object_type_id", "object_id"}
        return ("", "") if valid else ("identifiers", "must be object_type_id and object_id")
    usable = PERSON_IDS | ({"anonymous_id"} if item["action"] in NAMED_ACTIONS else set())
    return ("", "") if single_person_id(identifiers, usable) else ("identifiers", "must hold one person id")


def single_person_id(identifiers: Any, usable: set[str]) -> bool:
    return (
        isinstance(identifiers, dict)
        and len(identifiers) == 1
        and set(identifiers) <= usable
        and all(isinstance(value, str) and value for value in identifiers.values())
    )


def send(vendor: FakeVendor, request: Request) -> httpx.Response:
    """Send a rendered request to the fake (whose URL replaces the host), as the engine would."""
    path = request.url.split("/api/", 1)[1]
    return httpx.request(
        request.method, f"{vendor.url}/api/{path}", headers=dict(request.headers), content=request.body
    )


def with_items(request: Request, items: list[Any]) -> Request:
    """The same request carrying other batch items."""
    return Request(request.method, request.url, request.headers, orjson.dumps({"batch": items}))


def settings(**overrides: str) -> CustomerIOSettings:
    return parse_settings(CustomerIOSettings, {"site_id": SITE_ID, "api_key": API_KEY, **overrides})


def test_the_whole_spec_scenario_is_accepted():
    with FakeVendor(customerio_contract) as vendor:
        requests = render(destination, settings(base_url=vendor.url), spec_events.scenario())
        answers = [send(vendor, request) for request in requests]
        assert [(answer.status_code, answer.json()) for answer in answers] == [(200, {})]
        assert sum(len(captured.json()["batch"]) for captured in vendor.received()) == 11


def test_the_fake_rejects_bad_credentials_with_customerios_401():
    with FakeVendor(customerio_contract) as vendor:
        [request] = render(destination, settings(api_key="wrong"), [spec_events.signed_up()])
        answer = send(vendor, request)
        assert (answer.status_code, answer.json()) == (401, {"meta": {"error": "Unauthorized request"}})
        outcome = destination.classify(Response(401, {}, answer.content), request, 1)
        assert outcome.verdict == Verdict.GIVE_UP


def test_the_fake_reports_bad_items_by_batch_index_and_we_give_only_those_up():
    good = render(destination, settings(), [spec_events.signed_up(), spec_events.page()])[0]
    items = orjson.loads(good.body)["batch"]
    millis = {**items[0], "timestamp": int(time.time() * 1000)}  # wrong unit
    no_ulid = {**items[1], "id": "ajs-next-1764324000000-pg-0008"}
    nameless = {key: value for key, value in items[0].items() if key != "name"}
    broken = with_items(good, [items[0], millis, no_ulid, nameless])
    with FakeVendor(customerio_contract) as vendor:
        answer = send(vendor, broken)
    assert answer.status_code == 207
    assert [(error["batch_index"], error["field"]) for error in answer.json()["errors"]] == [
        (1, "timestamp"),
        (2, "id"),
        (3, "name"),
    ]
    outcomes = destination.classify(Response(207, {}, answer.content), broken, 4)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.DELIVERED] + [Verdict.GIVE_UP] * 3


def test_the_fake_rejects_a_request_over_500_kb():
    [request] = render(destination, settings(), [spec_events.signed_up()])
    items = orjson.loads(request.body)["batch"] * 200
    padded = [{**item, "attributes": {"pad": "p" * 3_000}} for item in items]
    with FakeVendor(customerio_contract) as vendor:
        answer = send(vendor, with_items(request, padded))
    assert answer.status_code == 413


def test_the_fake_rejects_an_anonymous_identify():
    [request] = render(destination, settings(), [spec_events.identify()])
    [item] = orjson.loads(request.body)["batch"]
    anonymous = {**item, "identifiers": {"anonymous_id": "a-1"}}
    with FakeVendor(customerio_contract) as vendor:
        answer = send(vendor, with_items(request, [anonymous]))
    assert answer.json() == {
        "errors": [
            {
                "batch_index": 0,
                "reason": "invalid",
                "field": "identifiers",
                "message": "must hold one person id",
            }
        ]
    }
