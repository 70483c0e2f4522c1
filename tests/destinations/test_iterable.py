"""Iterable: exact bulkUpdate / trackBulk / trackPurchase requests, batching, classification of
Iterable's answers (partial failures by email and userId), settings, and the whole Spec
scenario against a fake that checks Iterable's documented contract.

No differential test: Iterable publishes no official Python SDK (destinations-marketing.md
§0.3; `iterable-api` is a community package).
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations import registry
from trackyard.destinations.base import (
    Request,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.iterable import IterableSettings, destination

API_KEY = "c0ffee2b9d8e4f6a8b1c3d5e7f9a1b3c"
SETTINGS = parse_settings(IterableSettings, {"api_key": API_KEY})
ROOT = "https://api.iterable.com/api"
HEADERS = (("Content-Type", "application/json"), ("Api-Key", API_KEY))
WHO = {"email": "peter@example.com", "userId": "97980cfea0067"}
CREATED_AT = 1795860005  # 2026-11-28T10:00:05.180Z in unix seconds


def settings(**overrides: str) -> IterableSettings:
    return parse_settings(IterableSettings, {"api_key": API_KEY, **overrides})


def only_request(event: dict[str, Any], config: IterableSettings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def body_of(event: dict[str, Any], config: IterableSettings = SETTINGS) -> dict[str, Any]:
    return orjson.loads(only_request(event, config).body)


def track(event_name: str, properties: dict[str, Any], message_id: str = "m-1") -> dict[str, Any]:
    return spec_events.track(event_name, properties, message_id)


# -- identify -------------------------------------------------------------------------------


def test_identify_is_a_bulk_user_update_with_converted_dates_and_phone_number():
    request = only_request(spec_events.identify())
    assert (request.method, request.url, request.headers) == ("POST", f"{ROOT}/users/bulkUpdate", HEADERS)
    assert orjson.loads(request.body) == {
        "users": [
            {
                **WHO,
                "dataFields": {
                    "email": "peter@example.com",
                    "firstName": "Peter",
                    "lastName": "Gibbons",
                    "name": "Peter Gibbons",
                    "phone": "+1 (555) 010-9999",
                    "plan": "premium",
                    "logins": 5,
                    "createdAt": "2026-01-15 09:30:00 +00:00",
                    "address": {
                        "city": "San Francisco",
                        "country": "US",
                        "postalCode": "94107",
                        "state": "CA",
                        "street": "6th St",
                    },
                    "phoneNumber": "+1 (555) 010-9999",
                },
                "mergeNestedObjects": False,
            }
        ]
    }


APPENDIX_TRAITS = {
    "email": "jane.doe@example.com",
    "firstName": "Jane",
    "lastName": "Doe",
    "phone": "+15551234567",
    "plan": "pro",
    "createdAt": "2024-01-01T00:00:00Z",
    "address": {"city": "New York", "postal_code": "10001", "country": "US"},
}


def test_appendix_a3_identify_golden():
    event = {
        "type": "identify",
        "userId": "u123",
        "anonymousId": "a-1",
        "messageId": "m-2",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "traits": APPENDIX_TRAITS,
    }
    assert body_of(event) == {
        "users": [
            {
                "email": "jane.doe@example.com",
                "userId": "u123",
                "mergeNestedObjects": False,
                "dataFields": {
                    **APPENDIX_TRAITS,
                    "createdAt": "2024-01-01 00:00:00 +00:00",
                    "phoneNumber": "+15551234567",
                },
            }
        ]
    }


def test_appendix_a3_order_completed_golden():
    context_traits = {
        "email": "jane.doe@example.com",
        "phone": "+1 (555) 123-4567",
        "firstName": "Jane",
        "lastName": "Doe",
        "address": {"city": "New York", "state": "New York", "postalCode": "10001", "country": "US"},
    }
    event = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u123",
        "anonymousId": "a-1",
        "messageId": "m-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "context": {"ip": "203.0.113.7", "traits": context_traits},
        "properties": {
            "order_id": "o-9",
            "total": 30,
            "revenue": 25,
            "currency": "USD",
            "products": [
                {"product_id": "p1", "name": "Mug", "price": 10, "quantity": 2, "category": "kitchen"},
                {"product_id": "p2", "name": "Tee", "price": 5, "quantity": 1},
            ],
        },
    }
    request = only_request(event)
    assert (request.method, request.url) == ("POST", f"{ROOT}/commerce/trackPurchase")
    assert orjson.loads(request.body) == {
        "id": "o-9",
        "user": {
            "email": "jane.doe@example.com",
            "userId": "u123",
            "mergeNestedObjects": False,
            "dataFields": {**context_traits, "phoneNumber": "+1 (555) 123-4567"},
        },
        "items": [
            {
                "id": "p1",
                "name": "Mug",
                "price": 10,
                "quantity": 2,
                "categories": ["kitchen"],
                "dataFields": {},
            },
            {"id": "p2", "name": "Tee", "price": 5, "quantity": 1, "dataFields": {}},
        ],
        "total": 30,
        "createdAt": 1714564800,
        "dataFields": {"order_id": "o-9", "total": 30, "revenue": 25, "currency": "USD"},
    }


# -- track ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        spec_events.product_viewed,
        spec_events.product_added,
        spec_events.checkout_started,
        spec_events.products_searched,
        spec_events.signed_up,
    ],
    ids=lambda make: make.__name__,
)
def test_a_track_is_a_bulk_event_keyed_by_message_id_with_unix_seconds(make):
    event = make()
    request = only_request(event)
    assert (request.method, request.url, request.headers) == ("POST", f"{ROOT}/events/trackBulk", HEADERS)
    assert orjson.loads(request.body) == {
        "events": [
            {
                **WHO,
                "eventName": event["event"],
                "id": event["messageId"],
                "createdAt": CREATED_AT,
                "dataFields": event["properties"],
            }
        ]
    }


def test_order_completed_is_a_purchase_with_items_from_products():
    request = only_request(spec_events.order_completed())
    assert (request.method, request.url, request.headers) == (
        "POST",
        f"{ROOT}/commerce/trackPurchase",
        HEADERS,
    )
    assert orjson.loads(request.body) == {
        "id": "50314b8e9bcf000000000000",
        "user": {**WHO, "dataFields": {"email": "peter@example.com"}, "mergeNestedObjects": False},
        "items": [
            {
                "id": "507f1f77",
                "sku": "G-32",
                "name": "Monopoly: 3rd Edition",
                "price": 18.99,
                "quantity": 1,
                "categories": ["Games"],
                "url": "https://shop.example/product/path",
                "imageUrl": "https://shop.example/product/path.jpg",
                "dataFields": {
                    "brand": "Hasbro",
                    "variant": "200 pieces",
                    "coupon": "MAYDEALS",
                    "position": 3,
                },
            },
            {
                "id": "505bd76",
                "sku": "F-11",
                "name": "Uno Card Game",
                "price": 3.0,
                "quantity": 2,
                "categories": ["Games"],
                "dataFields": {"brand": "Mattel"},
            },
        ],
        "total": 27.5,
        "createdAt": CREATED_AT,
        "dataFields": {
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
        },
    }


def test_purchase_items_need_an_id_a_name_and_a_price_and_the_total_falls_back():
    event = track(
        "Order Completed",
        {
            "revenue": 9,
            "products": [
                {"sku": "S-1", "name": "By sku", "price": 4},
                {"product_id": "p2", "price": 2},
                {"product_id": "p3", "name": "No price"},
            ],
        },
    )
    body = body_of(event)
    assert [(item["id"], item["quantity"]) for item in body["items"]] == [("S-1", 1)]
    assert (body["id"], body["total"]) == ("m-1", 9)
    del event["properties"]["revenue"]
    event["properties"]["products"][0]["quantity"] = 3
    assert body_of(event)["total"] == 12
    with pytest.raises(Skip, match="no product"):
        destination.translate(track("Order Completed", {"products": [{"name": "x"}]}), SETTINGS)


def test_campaign_and_template_ids_are_passed_when_they_are_integers():
    body = body_of(track("Email Clicked", {"campaignId": 1234, "templateId": 55, "link": "x"}))
    assert (body["events"][0]["campaignId"], body["events"][0]["templateId"]) == (1234, 55)
    assert "campaignId" not in body_of(track("Email Clicked", {"campaignId": "abc"}))["events"][0]


def test_dates_in_data_fields_are_converted_through_objects_and_arrays_but_not_date_only():
    event = track(
        "Trip Booked",
        {
            "departs": "2026-12-24T18:30:00+01:00",
            "day": "2026-12-24",
            "legs": [{"at": "2026-12-25T08:00:00.000Z"}],
            "note": "2026 was a year",
        },
    )
    assert body_of(event)["events"][0]["dataFields"] == {
        "departs": "2026-12-24 17:30:00 +00:00",
        "day": "2026-12-24",
        "legs": [{"at": "2026-12-25 08:00:00 +00:00"}],
        "note": "2026 was a year",
    }


def test_a_message_id_longer_than_iterable_allows_becomes_its_uuid5():
    long_id = "m" * 600
    first = body_of(track("Signed Up", {}, long_id))["events"][0]["id"]
    assert first == body_of(track("Signed Up", {}, long_id))["events"][0]["id"]
    assert uuid.UUID(first).version == 5


def test_pages_and_screens_are_named_custom_events():
    page = body_of(spec_events.page())["events"][0]
    assert (page["eventName"], page["dataFields"]) == ("Pricing page", spec_events.page()["properties"])
    screen = body_of(spec_events.screen())["events"][0]
    assert screen == {
        "userId": "97980cfea0067",
        "eventName": "Home screen",
        "id": "ios-0009",
        "createdAt": CREATED_AT,
        "dataFields": {"variation": "blue"},
    }
    unnamed = spec_events.page()
    unnamed.pop("name")
    unnamed["properties"] = {}
    assert body_of(unnamed)["events"][0]["eventName"] == "Loaded a Page"


@pytest.mark.parametrize(
    ("make", "reason"), [(spec_events.group, "no group"), (spec_events.alias, "no alias")]
)
def test_group_and_alias_are_skipped_with_a_reason(make, reason):
    with pytest.raises(Skip, match=reason):
        destination.translate(make(), SETTINGS)


# -- identifiers ----------------------------------------------------------------------------


def test_email_projects_skip_events_without_an_email():
    event = spec_events.signed_up()
    del event["context"]["traits"]
    assert body_of(event)["events"][0]["userId"] == "97980cfea0067"
    with pytest.raises(Skip, match="by email"):
        destination.translate(event, settings(identifier="email"))


def test_user_id_projects_prefer_the_user_id_and_skip_events_without_one():
    user = body_of(spec_events.identify(), settings(identifier="user_id"))["users"][0]
    assert user["preferUserId"] is True
    event = spec_events.signed_up()
    del event["userId"]
    assert "userId" not in body_of(event)["events"][0]
    with pytest.raises(Skip, match="by userId"):
        destination.translate(event, settings(identifier="user_id"))


def test_an_event_with_neither_email_nor_user_id_is_skipped():
    event = spec_events.signed_up()
    del event["userId"]
    del event["context"]["traits"]
    with pytest.raises(Skip, match="neither"):
        destination.translate(event, SETTINGS)


def test_properties_email_wins_over_context_traits():
    event = track("Signed Up", {"email": "work@example.com"})
    assert body_of(event)["events"][0]["email"] == "work@example.com"


# -- batching -------------------------------------------------------------------------------


def test_2500_events_are_cut_at_1000_per_bulk_request():
    events = [track("Video Played", {"n": i}, f"m-{i}") for i in range(2500)]
    requests = render(destination, SETTINGS, events)
    assert [len(orjson.loads(request.body)["events"]) for request in requests] == [1000, 1000, 500]


def test_each_purchase_travels_alone_and_bulk_endpoints_are_separate():
    second_order = spec_events.order_completed()
    second_order["messageId"] = "another-order"
    events = [spec_events.identify(), spec_events.signed_up(), spec_events.order_completed(), second_order]
    requests = render(destination, SETTINGS, events)
    assert [request.url.removeprefix(ROOT) for request in requests] == [
        "/users/bulkUpdate",
        "/events/trackBulk",
        "/commerce/trackPurchase",
        "/commerce/trackPurchase",
    ]


def test_a_resent_purchase_with_the_same_message_id_is_sent_once():
    requests = render(destination, SETTINGS, [spec_events.order_completed(), spec_events.order_completed()])
    assert [request.url for request in requests] == [f"{ROOT}/commerce/trackPurchase"]
    assert orjson.loads(requests[0].body)["id"] == "50314b8e9bcf000000000000"


# -- classification -------------------------------------------------------------------------


def events_request() -> Request:
    events = [
        track("Video Played", {"n": 0}, "m-0"),
        track("Secret Event", {"n": 1}, "m-1"),
        track("Video Played", {"n": 2}, "m-2"),
    ]
    events[0]["context"]["traits"]["email"] = "bad@"
    events[2]["userId"] = "forgotten-user"
    [request] = render(destination, SETTINGS, events)
    return request


def classify(status: int, body: Any, headers: dict[str, str] | None = None, request: Request | None = None):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return destination.classify(Response(status, headers or {}, raw), request or events_request(), 3)


def test_success_is_delivered():
    outcome = classify(
        200, {"successCount": 3, "failCount": 0, "failedUpdates": {}, "disallowedEventNames": []}
    )
    assert outcome.verdict is Verdict.DELIVERED


def test_failed_updates_give_up_only_the_items_they_name():
    body = {
        "successCount": 0,
        "failCount": 3,
        "failedUpdates": {
            "invalidEmails": ["bad@"],
            "forgottenUserIds": ["forgotten-user"],
            "notFoundEmails": [],
        },
        "disallowedEventNames": ["Secret Event"],
    }
    outcomes = classify(200, body)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.GIVE_UP] * 3
    assert ["invalidEmails" in outcomes[0].reason, "disallowedEventNames" in outcomes[1].reason] == [
        True,
        True,
    ]
    assert "forgottenUserIds" in outcomes[2].reason
    body = {"successCount": 2, "failCount": 1, "failedUpdates": {"invalidEmails": ["bad@"]}}
    assert [outcome.verdict for outcome in classify(200, body)] == [
        Verdict.GIVE_UP,
        Verdict.DELIVERED,
        Verdict.DELIVERED,
    ]


def test_a_400_naming_items_gives_those_up_and_retries_the_others():
    body = {
        "msg": "Invalid email",
        "code": "InvalidEmailAddressError",
        "failedUpdates": {"invalidEmails": ["bad@"]},
    }
    assert [outcome.verdict for outcome in classify(400, body)] == [
        Verdict.GIVE_UP,
        Verdict.RETRY,
        Verdict.RETRY,
    ]


@pytest.mark.parametrize(
    ("status", "code"), [(400, "BadParams"), (400, "BadJsonBody"), (401, "BadApiKey"), (404, "NotFound")]
)
def test_other_client_errors_give_up_with_iterables_code(status, code):
    outcome = classify(status, {"msg": "refused", "code": code, "params": None})
    assert outcome.verdict is Verdict.GIVE_UP
    assert f"HTTP {status}" in outcome.reason and code in outcome.reason


def test_a_429_is_retried_after_retry_after():
    outcome = classify(429, {"msg": "Rate limit exceeded", "code": "RateLimitExceeded"}, {"retry-after": "2"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 2.0)
    assert classify(429, b"").retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(status):
    assert classify(status, b"").verdict is Verdict.RETRY


def test_a_purchase_is_delivered_or_given_up_as_a_whole():
    purchase = only_request(spec_events.order_completed())
    ok = destination.classify(Response(200, {}, b'{"msg":"","code":"Success"}'), purchase, 1)
    assert ok.verdict is Verdict.DELIVERED
    bad = destination.classify(Response(400, {}, b'{"msg":"items required","code":"BadParams"}'), purchase, 1)
    assert bad.verdict is Verdict.GIVE_UP


# -- settings -------------------------------------------------------------------------------


def test_a_missing_api_key_is_named():
    with pytest.raises(SettingsError, match="'api_key'"):
        parse_settings(IterableSettings, {"region": "eu"})


def test_the_api_key_is_secret_and_regions_and_project_types_are_choices():
    schema = {spec.name: spec for spec in settings_schema(IterableSettings)}
    assert schema["api_key"].secret and schema["api_key"].required
    assert schema["region"].choices == ("us", "eu")
    assert schema["identifier"].choices == ("email_or_user_id", "email", "user_id")
    with pytest.raises(SettingsError, match="'region'"):
        settings(region="ap")


def test_the_eu_data_centre_and_base_url_choose_the_host():
    assert only_request(spec_events.signed_up(), settings(region="eu")).url == (
        "https://api.eu.iterable.com/api/events/trackBulk"
    )
    proxied = only_request(spec_events.order_completed(), settings(base_url="http://127.0.0.1:9/it/"))
    assert proxied.url == "http://127.0.0.1:9/it/commerce/trackPurchase"


def test_the_catalog_knows_it_by_segments_name():
    entry = registry.get("iterable")
    assert entry.name == "Iterable"
    assert entry.catalog_entry()["category"] == "marketing automation"
    assert (entry.batching.max_events, entry.default_rate_limit) == (1000, 5.0)


# -- the contract, played by a fake Iterable ---------------------------------------------------

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ISO_T = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
BULK_LIMIT = 1000
FAILURE_LISTS = ("invalidEmails", "invalidUserIds", "invalidDataEmails", "invalidDataUserIds")


def seconds_problem(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return "createdAt must be an integer"
    if not 1_000_000_000 <= value < 10_000_000_000:
        return "createdAt must be unix seconds"
    return None


def iso_dates_in(value: Any) -> bool:
    """Iterable reads dates only as `YYYY-MM-DD HH:mm:ss +00:00`; an ISO `T` string stays text."""
    if isinstance(value, dict):
        return any(iso_dates_in(item) for item in value.values())
    if isinstance(value, list):
        return any(iso_dates_in(item) for item in value)
    return isinstance(value, str) and bool(ISO_T.match(value))


def user_failure(user: dict[str, Any]) -> str | None:
    """Which failure list names this user or event, or None when Iterable takes it."""
    email, user_id = user.get("email"), user.get("userId")
    if email is not None and not EMAIL.match(str(email)):
        return "invalidEmails"
    data = user.get("dataFields", {})
    if not isinstance(data, dict) or iso_dates_in(data):
        return "invalidDataEmails" if email else "invalidDataUserIds"
    if user_id is not None and not isinstance(user_id, str):
        return "invalidUserIds"
    return None


class IterableAPI:
    """Iterable's users/bulkUpdate, events/trackBulk and commerce/trackPurchase as documented:
    `Api-Key` header (401 BadApiKey), an email or userId on every item (400 BadParams),
    at most 1,000 items per bulk request, `createdAt` in unix seconds, dates in dataFields
    as Iterable reads them; bad items are reported in `failedUpdates` of a 200 answer.
    `refusals` keeps every non-2xx answer and every failed item."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.accepted: dict[str, list[dict[str, Any]]] = {"users": [], "events": [], "purchases": []}
        self.refusals: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        status, answer = self.answer(request)
        with self.lock:
            if status >= 300 or answer.get("failCount"):
                self.refusals.append((status, answer))
        return ok_json(answer, status)

    def answer(self, request: Captured) -> tuple[int, dict[str, Any]]:
        routes = {
            "/users/bulkUpdate": ("users", self.bulk),
            "/events/trackBulk": ("events", self.bulk),
            "/commerce/trackPurchase": ("purchases", self.purchase),
        }
        if request.method != "POST" or request.path not in routes:
            return 404, {"msg": "Not found", "code": "NotFound", "params": None}
        if request.headers.get("api-key") != self.api_key:
            return 401, {"msg": "Invalid API key", "code": "BadApiKey", "params": None}
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return 400, {"msg": "Invalid JSON body", "code": "BadJsonBody", "params": None}
        kind, handle = routes[request.path]
        return handle(kind, body)

    def bulk(self, kind: str, body: Any) -> tuple[int, dict[str, Any]]:
        items = body.get(kind) if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return 400, {"msg": f"'{kind}' must be a non-empty array", "code": "BadParams", "params": None}
        if len(items) > BULK_LIMIT:
            return 400, {"msg": f"at most {BULK_LIMIT} {kind}", "code": "BadParams", "params": None}
        for item in items:
            problem = self.item_problem(kind, item)
            if problem:
                return 400, {"msg": problem, "code": "BadParams", "params": None}
        failed: dict[str, list[str]] = {name: [] for name in FAILURE_LISTS}
        taken = []
        for item in items:
            failure = user_failure(item)
            if failure:
                failed[failure].append(str(item.get("email") if "Emails" in failure else item.get("userId")))
            else:
                taken.append(item)
        with self.lock:
            self.accepted[kind].extend(taken)
        answer = {"successCount": len(taken), "failCount": len(items) - len(taken), "failedUpdates": failed}
        if kind == "events":
            answer["disallowedEventNames"] = []
        return 200, answer

    def item_problem(self, kind: str, item: Any) -> str | None:
        if not isinstance(item, dict) or not (item.get("email") or item.get("userId")):
            return "email or userId is required"
        if kind == "events":
            if not isinstance(item.get("eventName"), str) or not item["eventName"]:
                return "eventName is required"
            return seconds_problem(item.get("createdAt"))
        return None

    def purchase(self, kind: str, body: Any) -> tuple[int, dict[str, Any]]:
        problem = self.purchase_problem(body)
        if problem:
            return 400, {"msg": problem, "code": "BadParams", "params": None}
        with self.lock:
            self.accepted[kind].append(body)
        return 200, {"msg": "", "code": "Success", "params": None}

    def purchase_problem(self, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("user"), dict):
            return "user is required"
        user = body["user"]
        if not (user.get("email") or user.get("userId")) or user_failure(user):
            return "user needs a valid email or userId"
        items = body.get("items")
        if not isinstance(items, list) or not items:
            return "items is required"
        for item in items:
            if not isinstance(item.get("id"), str) or not isinstance(item.get("name"), str):
                return "each item needs an id and a name"
            if isinstance(item.get("price"), bool) or not isinstance(item.get("price"), int | float):
                return "each item needs a numeric price"
            if isinstance(item.get("quantity"), bool) or not isinstance(item.get("quantity"), int):
                return "each item needs an integer quantity"
        if isinstance(body.get("total"), bool) or not isinstance(body.get("total"), int | float):
            return "total is required"
        if iso_dates_in(body.get("dataFields", {})):
            return "dates in dataFields must be 'YYYY-MM-DD HH:mm:ss +00:00'"
        return seconds_problem(body.get("createdAt"))


def send(request: Request) -> httpx.Response:
    return httpx.request(request.method, request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = IterableAPI()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url)
        events = [event for event in spec_events.scenario() if event["type"] not in ("group", "alias")]
        for request in render(destination, config, events):
            reply = send(request)
            assert reply.status_code == 200
            assert (
                destination.classify(Response(200, {}, reply.content), request, 1).verdict
                is Verdict.DELIVERED
            )
    assert contract.refusals == []
    assert {kind: len(items) for kind, items in contract.accepted.items()} == {
        "users": 1,
        "events": 7,
        "purchases": 1,
    }


def test_the_fake_refuses_what_iterable_refuses():
    contract = IterableAPI()
    with FakeVendor(contract) as vendor:
        good = only_request(spec_events.signed_up(), settings(base_url=vendor.url))
        wrong_key = Request(good.method, good.url, (HEADERS[0], ("Api-Key", "nope")), good.body)
        assert send(wrong_key).json()["code"] == "BadApiKey"
        [event] = orjson.loads(good.body)["events"]
        too_many = Request.json(good.url, {"events": [event] * 1001}, dict(HEADERS))
        assert send(too_many).status_code == 400
        in_ms = Request.json(good.url, {"events": [{**event, "createdAt": 1795860005180}]}, dict(HEADERS))
        assert send(in_ms).json()["msg"] == "createdAt must be unix seconds"
        bad_email = {**copy.deepcopy(event), "email": "bad@"}
        iso_date = {
            **copy.deepcopy(event),
            "email": "other@example.com",
            "dataFields": {"at": "2026-11-28T10:00:05Z"},
        }
        mixed = Request.json(good.url, {"events": [event, bad_email, iso_date]}, dict(HEADERS))
        reply = send(mixed).json()
        assert (reply["successCount"], reply["failCount"]) == (1, 2)
        assert (reply["failedUpdates"]["invalidEmails"], reply["failedUpdates"]["invalidDataEmails"]) == (
            ["bad@"],
            ["other@example.com"],
        )
        outcomes = destination.classify(Response(200, {}, orjson.dumps(reply)), mixed, 3)
        assert [outcome.verdict for outcome in outcomes] == [
            Verdict.DELIVERED,
            Verdict.GIVE_UP,
            Verdict.GIVE_UP,
        ]
    assert [status for status, _ in contract.refusals] == [401, 400, 400, 200]
