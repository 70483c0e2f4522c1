"""Heap: the Spec scenario as exact server-side API requests, limits, responses, and a fake
Heap that checks the documented contract (destinations-analytics.md §5).

Heap publishes no official Python SDK for its server-side API, so there is no
differential test; the fake below encodes the reference pages instead.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply
from trackyard.delivery.batching import render
from trackyard.destinations.base import (
    Request,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.heap import destination, flatten
from trackyard.destinations.registry import catalog

APP_ID = "3417920188"
SETTINGS = parse_settings(destination.Settings, {"app_id": APP_ID})
USER = "97980cfea0067"
ANONYMOUS = "507f191e810c19729de860ea"


def settings(**raw: Any) -> Any:
    return parse_settings(destination.Settings, {"app_id": APP_ID, **raw})


def body_of(request: Request) -> dict[str, Any]:
    return orjson.loads(request.body)


def only_event(event: dict[str, Any], configured: Any = SETTINGS) -> dict[str, Any]:
    [request] = render(destination, configured, [event])
    [item] = body_of(request)["events"]
    return item


def heap_event(event: dict[str, Any], name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "identity": USER,
        "event": name,
        "timestamp": "2026-11-28T10:00:05.180Z",
        "idempotency_key": event["messageId"],
        "properties": properties,
    }


# -- translation ---------------------------------------------------------------------------


def test_identify_adds_the_flattened_traits_as_user_properties():
    [request] = render(destination, SETTINGS, [spec_events.identify()])
    assert request.method == "POST"
    assert request.url == "https://heapanalytics.com/api/add_user_properties"
    assert request.headers == (("Content-Type", "application/json"),)
    assert body_of(request) == {
        "app_id": APP_ID,
        "users": [
            {
                "identity": USER,
                "properties": {
                    "email": "peter@example.com",
                    "firstName": "Peter",
                    "lastName": "Gibbons",
                    "name": "Peter Gibbons",
                    "phone": "+1 (555) 010-9999",
                    "plan": "premium",
                    "logins": 5,
                    "createdAt": "2026-01-15T09:30:00.000Z",
                    "address.city": "San Francisco",
                    "address.country": "US",
                    "address.postalCode": "94107",
                    "address.state": "CA",
                    "address.street": "6th St",
                    "anonymous_id": ANONYMOUS,
                },
            }
        ],
    }


def test_order_completed_is_a_bulk_track_event_with_products_flattened():
    event = spec_events.order_completed()
    [request] = render(destination, SETTINGS, [event])
    assert request.url == "https://heapanalytics.com/api/track"
    assert body_of(request) == {
        "app_id": APP_ID,
        "events": [
            heap_event(
                event,
                "Order Completed",
                {
                    "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
                    "order_id": "50314b8e9bcf000000000000",
                    "affiliation": "Google Store",
                    "total": 27.5,
                    "subtotal": 22.5,
                    "revenue": 25.0,
                    "shipping": 3,
                    "tax": 2,
                    "discount": 2.5,
                    "coupon": "hasbros",
                    "currency": "USD",
                    "products.0.product_id": "507f1f77",
                    "products.0.sku": "G-32",
                    "products.0.category": "Games",
                    "products.0.name": "Monopoly: 3rd Edition",
                    "products.0.brand": "Hasbro",
                    "products.0.variant": "200 pieces",
                    "products.0.price": 18.99,
                    "products.0.quantity": 1,
                    "products.0.coupon": "MAYDEALS",
                    "products.0.position": 3,
                    "products.0.url": "https://shop.example/product/path",
                    "products.0.image_url": "https://shop.example/product/path.jpg",
                    "products.1.product_id": "505bd76",
                    "products.1.sku": "F-11",
                    "products.1.category": "Games",
                    "products.1.name": "Uno Card Game",
                    "products.1.brand": "Mattel",
                    "products.1.price": 3.0,
                    "products.1.quantity": 2,
                },
            )
        ],
    }


@pytest.mark.parametrize(
    "make", [spec_events.product_viewed, spec_events.product_added, spec_events.products_searched]
)
def test_flat_track_events_keep_name_and_properties(make):
    event = make()
    assert only_event(event) == heap_event(event, event["event"], event["properties"])


def test_checkout_started_flattens_its_products_like_order_completed():
    event = spec_events.checkout_started()
    properties = only_event(event)["properties"]
    assert properties["value"] == 30
    assert properties["products.1.name"] == "Uno Card Game"
    assert not any(isinstance(value, dict | list) for value in properties.values())


def test_booleans_become_strings_because_heap_takes_only_numbers_and_strings():
    event = spec_events.signed_up()
    assert only_event(event) == heap_event(event, "Signed Up", {"plan": "pro", "trial": "true", "seats": 3})


def test_page_is_page_viewed_named_by_the_page():
    event = spec_events.page()
    assert only_event(event) == heap_event(
        event,
        "Page viewed",
        {
            "name": "Pricing",
            "title": "Pricing · Shop",
            "url": "https://shop.example/pricing",
            "path": "/pricing",
            "referrer": "https://www.google.com/",
            "search": "",
            "category": "Docs",
        },
    )


def test_screen_is_screen_viewed_named_by_the_screen():
    event = spec_events.screen()
    assert only_event(event) == heap_event(event, "Screen viewed", {"variation": "blue", "name": "Home"})


@pytest.mark.parametrize("make", [spec_events.group, spec_events.alias])
def test_group_and_alias_are_not_taken(make):
    with pytest.raises(Skip, match="does not take"):
        destination.translate(make(), SETTINGS)


def test_the_spec_scenario_is_one_user_request_and_one_bulk_track_in_log_order():
    events = [event for event in spec_events.scenario() if event["type"] not in ("group", "alias")]
    users, tracks = render(destination, SETTINGS, events)
    assert users.url.endswith("/api/add_user_properties")
    assert [user["identity"] for user in body_of(users)["users"]] == [USER]
    assert tracks.url.endswith("/api/track")
    assert [item["idempotency_key"] for item in body_of(tracks)["events"]] == [
        event["messageId"] for event in events[1:]
    ]


# -- identity ------------------------------------------------------------------------------


def test_an_anonymous_event_uses_the_anonymous_id_as_identity():
    event = spec_events.signed_up()
    event.pop("userId")
    assert only_event(event)["identity"] == ANONYMOUS


def test_anonymous_events_are_skipped_when_anonymous_users_are_off():
    event = spec_events.signed_up()
    event.pop("userId")
    with pytest.raises(Skip, match="anonymous users are off"):
        destination.translate(event, settings(anonymous_users="false"))
    assert only_event(spec_events.signed_up(), settings(anonymous_users="false"))["identity"] == USER


def test_anonymous_identify_sets_properties_on_the_anonymous_identity_without_anonymous_id():
    event = spec_events.identify()
    event.pop("userId")
    [request] = render(destination, SETTINGS, [event])
    [user] = body_of(request)["users"]
    assert user["identity"] == ANONYMOUS
    assert "anonymous_id" not in user["properties"]


def test_an_identity_longer_than_255_characters_is_skipped():
    event = spec_events.signed_up()
    event["userId"] = "u" * 256
    with pytest.raises(Skip, match="255"):
        destination.translate(event, SETTINGS)


def test_identify_without_traits_is_skipped():
    event = spec_events.identify()
    event["traits"] = {"id": "97980cfea0067"}
    with pytest.raises(Skip, match="no traits"):
        destination.translate(event, SETTINGS)


def test_user_properties_heap_reserves_are_dropped():
    event = spec_events.identify()
    event["traits"] = {"ID": "x", "user_id": "y", "plan": "pro"}
    [request] = render(destination, SETTINGS, [event])
    assert body_of(request)["users"][0]["properties"] == {"plan": "pro", "anonymous_id": ANONYMOUS}


# -- property rules -------------------------------------------------------------------------


def test_flatten_keeps_numbers_drops_nulls_and_cuts_long_strings():
    assert flatten(
        {
            "n": 1.5,
            "none": None,
            "long": "x" * 2000,
            "tags": ["a", "b"],
            "deep": {"a": {"b": [True, {"c": 0}]}},
            "empty": {},
        }
    ) == {
        "n": 1.5,
        "long": "x" * 1023,
        "tags.0": "a",
        "tags.1": "b",
        "deep.a.b.0": "true",
        "deep.a.b.1.c": 0,
    }


def test_an_event_name_is_cut_at_1024_characters():
    event = spec_events.signed_up()
    event["event"] = "E" * 1500
    assert only_event(event)["event"] == "E" * 1024


# -- hosts, settings, batching -------------------------------------------------------------


def test_eu_projects_go_to_heaps_eu_host_and_base_url_overrides_both():
    [eu] = render(destination, settings(region="eu"), [spec_events.signed_up()])
    assert eu.url == "https://c.eu.heap-api.com/api/track"
    [local] = render(
        destination, settings(region="eu", base_url="http://127.0.0.1:9/"), [spec_events.identify()]
    )
    assert local.url == "http://127.0.0.1:9/api/add_user_properties"


def test_missing_app_id_names_the_setting():
    with pytest.raises(SettingsError, match="'app_id'"):
        parse_settings(destination.Settings, {}, "heap")


def test_region_must_be_us_or_eu():
    with pytest.raises(SettingsError, match="'region' must be one of us, eu"):
        settings(region="ap")


def test_the_app_id_is_a_secret_and_the_catalog_lists_heap():
    specs = {spec.name: spec for spec in settings_schema(destination.Settings)}
    assert specs["app_id"].secret and specs["app_id"].required
    assert catalog()["heap"] is destination
    assert (destination.name, destination.dedupe_field) == ("Heap", "idempotency_key")
    # 15,000 events/min per app_id at 1,000 events per request
    assert destination.default_rate_limit == 15_000 / 60 / 1000


def test_2500_events_are_cut_into_bulk_requests_of_1000():
    events = [dict(spec_events.signed_up(), messageId=f"m-{i:04}") for i in range(2500)]
    requests = render(destination, SETTINGS, events)
    assert [len(body_of(r)["events"]) for r in requests] == [1000, 1000, 500]
    keys = [item["idempotency_key"] for r in requests for item in body_of(r)["events"]]
    assert keys == [event["messageId"] for event in events]


def test_user_requests_are_cut_at_1000_users():
    events = [dict(spec_events.identify(), userId=f"user-{i}") for i in range(1001)]
    requests = render(destination, SETTINGS, events)
    assert [len(body_of(r)["users"]) for r in requests] == [1000, 1]


# -- responses -------------------------------------------------------------------------------


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    [request] = render(destination, SETTINGS, [spec_events.signed_up()])
    return destination.classify(Response(status, headers or {}, body), request, 1)


def test_ok_is_delivered():
    assert respond(200).verdict == Verdict.DELIVERED


def test_an_invalid_request_gives_up_with_heaps_reason():
    outcome = respond(400, b'{"error":"Invalid property value"}')
    assert outcome.verdict == Verdict.GIVE_UP
    assert "Invalid property value" in outcome.reason


def test_rate_limited_requests_are_retried_after_retry_after():
    outcome = respond(429, b"Too Many Requests", {"retry-after": "30"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 30.0)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(status):
    assert respond(status).verdict == Verdict.RETRY


# -- a fake Heap server-side API ---------------------------------------------------------------


@dataclass
class HeapServerAPI:
    """Heap's track / bulk track / add_user_properties contract (developers.heap.io reference).

    Heap has no credential but the app_id; an unknown one is answered 400 here (Heap's
    exact answer for it is undocumented).
    """

    app_id: str
    rejections: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: Captured) -> Reply:
        problem = self.problem(request)
        if problem is not None:
            self.rejections.append(problem)
            return 400, {"Content-Type": "application/json"}, orjson.dumps({"error": problem})
        body = request.json()
        if request.path == "/api/track":
            self.events.extend(body.get("events") or [body])
        else:
            self.users.extend(body.get("users") or [body])
        return 200, {"Content-Type": "application/json"}, b"{}"

    def problem(self, request: Captured) -> str | None:
        if request.method != "POST" or request.path not in ("/api/track", "/api/add_user_properties"):
            return f"no such endpoint: {request.method} {request.path}"
        if not request.headers.get("content-type", "").startswith("application/json"):
            return "Content-Type must be application/json"
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return "body is not JSON"
        if body.get("app_id") != self.app_id:
            return f"Invalid app_id {body.get('app_id')!r}"
        if request.path == "/api/track":
            return bulk_problem(body, "events", track_problem)
        return bulk_problem(body, "users", user_problem)


def bulk_problem(body: dict[str, Any], key: str, check: Callable[[dict[str, Any]], str | None]) -> str | None:
    items = body.get(key, [body])
    if not isinstance(items, list) or not items:
        return f"'{key}' must be a non-empty array"
    if len(items) > 1000:
        return f"at most 1000 {key} per request; got {len(items)}"
    return next((problem for item in items if (problem := check(item))), None)


def identity_problem(item: dict[str, Any]) -> str | None:
    if ("identity" in item) == ("user_id" in item):
        return "exactly one of identity and user_id is required"
    identity = item.get("identity")
    if identity is not None and (not isinstance(identity, str) or not 0 < len(identity) <= 255):
        return "identity must be a string of 1 to 255 characters"
    return None


def properties_problem(properties: Any, reserved: frozenset[str] = frozenset()) -> str | None:
    if not isinstance(properties, dict):
        return "properties must be an object"
    for key, value in properties.items():
        if key.lower() in reserved:
            return f"property {key!r} is reserved"
        if len(key) >= 1024:
            return "property keys must be shorter than 1024 characters"
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return f"property {key!r} must be a number or a string; got {type(value).__name__}"
        if isinstance(value, str) and len(value) >= 1024:
            return f"property {key!r} must be shorter than 1024 characters"
    return None


def track_problem(item: dict[str, Any]) -> str | None:
    if problem := identity_problem(item):
        return problem
    if not isinstance(item.get("event"), str) or not 0 < len(item["event"]) <= 1024:
        return "event must be a name of 1 to 1024 characters"
    if "timestamp" in item:
        try:
            datetime.fromisoformat(item["timestamp"])
        except (TypeError, ValueError):
            return f"timestamp must be ISO-8601, e.g. 2017-03-10T22:21:56+00:00; got {item['timestamp']!r}"
    if "idempotency_key" in item and not isinstance(item["idempotency_key"], str):
        return "idempotency_key must be a string"
    return properties_problem(item.get("properties", {}))


def user_problem(item: dict[str, Any]) -> str | None:
    if "identity" not in item:
        return "identity is required"
    return identity_problem(item) or properties_problem(item.get("properties", {}), frozenset({"id"}))


def scenario_for_heap() -> list[dict[str, Any]]:
    return [event for event in spec_events.scenario() if event["type"] not in ("group", "alias")]


def test_the_fake_heap_accepts_the_whole_spec_scenario():
    contract = HeapServerAPI(APP_ID)
    with FakeVendor(contract) as fake:
        requests = render(destination, settings(base_url=fake.url), scenario_for_heap())
        with httpx.Client(timeout=10) as client:
            statuses = [
                client.post(r.url, content=r.body, headers=dict(r.headers)).status_code for r in requests
            ]
    assert statuses == [200] * len(requests)
    assert contract.rejections == []
    assert (len(contract.users), len(contract.events)) == (1, 8)


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (lambda body: body.update(app_id="999"), "Invalid app_id"),
        (lambda body: body["events"][0].update(timestamp=1764324005180), "ISO-8601"),
        (lambda body: body["events"][0]["properties"].update(nested={"a": 1}), "number or a string"),
        (lambda body: body["events"][0]["properties"].update(trial=True), "number or a string"),
        (lambda body: body["events"][0]["properties"].update(long="x" * 1024), "shorter than 1024"),
        (lambda body: body["events"][0].update(user_id="12345"), "exactly one of identity and user_id"),
        (lambda body: body["events"][0].pop("event"), "event must be a name"),
        (lambda body: body.update(events=body["events"] * 1001), "at most 1000 events"),
    ],
)
def test_the_fake_heap_rejects_broken_requests(breakage, reason):
    contract = HeapServerAPI(APP_ID)
    with FakeVendor(contract) as fake:
        [request] = render(destination, settings(base_url=fake.url), [spec_events.signed_up()])
        body = copy.deepcopy(body_of(request))
        breakage(body)
        response = httpx.post(request.url, content=orjson.dumps(body), headers=dict(request.headers))
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert (
        destination.classify(
            Response(response.status_code, dict(response.headers), response.content), request, 1
        ).verdict
        == Verdict.GIVE_UP
    )
