"""Braze: exact /users/track requests, batching, classification of Braze's answers, settings,
and the whole Spec scenario against a fake that checks Braze's documented contract.

No differential test: Braze publishes no official Python SDK (destinations-marketing.md
§0.3; `braze-client` is a community package the reference advises against relying on).
"""

from __future__ import annotations

import copy
import threading
import time
from datetime import datetime
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
from trackyard.destinations.braze import BrazeSettings, destination

API_KEY = "b7a2c9e4-rest-api-key"
SETTINGS = parse_settings(BrazeSettings, {"api_key": API_KEY})
URL = "https://rest.iad-01.braze.com/users/track"
HEADERS = (("Content-Type", "application/json"), ("Authorization", f"Bearer {API_KEY}"))
BATCH_HEADERS = (*HEADERS, ("X-Braze-Batch", "true"))
USER = {"external_id": "97980cfea0067", "_update_existing_only": False}
TIME = "2026-11-28T10:00:05.180Z"  # the Spec events' timestamp


def settings(**overrides: str) -> BrazeSettings:
    return parse_settings(BrazeSettings, {"api_key": API_KEY, **overrides})


def only_request(event: dict[str, Any], config: BrazeSettings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def body_of(event: dict[str, Any], config: BrazeSettings = SETTINGS) -> dict[str, Any]:
    return orjson.loads(only_request(event, config).body)


def track(event_name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return spec_events.track(event_name, properties, f"m-{event_name}")


# -- identify -------------------------------------------------------------------------------


def test_identify_is_one_attributes_object_posted_with_the_bearer_key():
    request = only_request(spec_events.identify())
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    assert orjson.loads(request.body) == {
        "attributes": [
            {
                "name": "Peter Gibbons",
                "plan": "premium",
                "logins": 5,
                "createdAt": "2026-01-15T09:30:00.000Z",
                "address": {
                    "city": "San Francisco",
                    "country": "US",
                    "postalCode": "94107",
                    "state": "CA",
                    "street": "6th St",
                },
                "email": "peter@example.com",
                "first_name": "Peter",
                "last_name": "Gibbons",
                "phone": "+1 (555) 010-9999",
                "home_city": "San Francisco",
                "country": "US",
                **USER,
            }
        ]
    }


@pytest.mark.parametrize(
    ("gender", "braze"),
    [
        ("male", "M"),
        ("Woman", "F"),
        ("f", "F"),
        ("other", "O"),
        ("not applicable", "N"),
        ("P", "P"),
        ("x", "x"),
    ],
)
def test_gender_is_normalised_as_segment_does(gender, braze):
    event = spec_events.identify()
    event["traits"] = {"gender": gender}
    assert body_of(event)["attributes"][0] == {"gender": braze, **USER}


def test_birthday_avatar_and_location_fill_standard_attributes():
    event = spec_events.identify()
    event["traits"] = {
        "birthday": "1990-05-17T00:00:00.000Z",
        "avatar": "https://img.example/p.png",
        "vip": True,
    }
    event["context"]["location"] = {"latitude": 52.37, "longitude": 4.89, "country": "NL"}
    assert body_of(event)["attributes"][0] == {
        "vip": True,
        "dob": "1990-05-17",
        "image_url": "https://img.example/p.png",
        "country": "NL",
        "current_location": {"latitude": 52.37, "longitude": 4.89},
        **USER,
    }


def test_group_sets_segments_group_attribute():
    assert body_of(spec_events.group()) == {
        "attributes": [{"ab_segment_group_0e8c78ea9d97a7b8185e8632": True, **USER}]
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
def test_a_track_is_a_custom_event_with_its_properties_and_iso_time(make):
    event = make()
    request = only_request(event)
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    assert orjson.loads(request.body) == {
        "events": [{**USER, "time": TIME, "name": event["event"], "properties": event["properties"]}]
    }


def test_order_completed_is_one_purchase_per_product_in_one_request():
    request = only_request(spec_events.order_completed())
    assert (request.method, request.url, request.headers) == ("POST", URL, BATCH_HEADERS)
    order = {
        "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
        "order_id": "50314b8e9bcf000000000000",
        "affiliation": "Google Store",
        "total": 27.5,
        "subtotal": 22.5,
        "revenue": 25.0,
        "shipping": 3,
        "tax": 2,
        "discount": 2.5,
        "coupon": "hasbros",  # the order's properties win over the product's, as in Segment
        "currency": "USD",
    }
    assert orjson.loads(request.body) == {
        "purchases": [
            {
                **USER,
                "time": TIME,
                "product_id": "507f1f77",
                "currency": "USD",
                "price": 18.99,
                "quantity": 1,
                "properties": {
                    "sku": "G-32",
                    "category": "Games",
                    "name": "Monopoly: 3rd Edition",
                    "brand": "Hasbro",
                    "variant": "200 pieces",
                    "position": 3,
                    "url": "https://shop.example/product/path",
                    "image_url": "https://shop.example/product/path.jpg",
                    **order,
                },
            },
            {
                **USER,
                "time": TIME,
                "product_id": "505bd76",
                "currency": "USD",
                "price": 3.0,
                "quantity": 2,
                "properties": {
                    "sku": "F-11",
                    "category": "Games",
                    "name": "Uno Card Game",
                    "brand": "Mattel",
                    **order,
                },
            },
        ]
    }


def test_purchase_currency_comes_from_the_product_then_the_order_then_usd():
    event = track(
        "Order Completed",
        {
            "currency": "eur",
            "products": [
                {"sku": "S-1", "price": 1, "currency": "GBP"},
                {"product_id": "p2", "price": 2},
                {"product_id": "no price"},
                {"name": "no id", "price": 3},
            ],
        },
    )
    purchases = body_of(event)["purchases"]
    assert [(p["product_id"], p["currency"], p["quantity"]) for p in purchases] == [
        ("S-1", "GBP", 1),
        ("p2", "EUR", 1),
    ]
    del event["properties"]["currency"]
    assert [p["currency"] for p in body_of(event)["purchases"]] == ["GBP", "USD"]


def test_an_order_without_a_usable_product_is_skipped():
    with pytest.raises(Skip, match="product_id"):
        destination.translate(track("Order Completed", {"order_id": "o", "products": []}), SETTINGS)


def test_app_id_is_copied_into_events_and_purchases_but_not_attributes():
    config = settings(app_id="app-42")
    assert body_of(spec_events.signed_up(), config)["events"][0]["app_id"] == "app-42"
    assert all(p["app_id"] == "app-42" for p in body_of(spec_events.order_completed(), config)["purchases"])
    assert "app_id" not in body_of(spec_events.identify(), config)["attributes"][0]


def test_update_existing_only_is_passed_on():
    body = body_of(spec_events.signed_up(), settings(update_existing_only="true"))
    assert body["events"][0]["_update_existing_only"] is True


def test_anonymous_events_go_to_an_alias_profile_or_are_skipped():
    event = spec_events.signed_up()
    del event["userId"]
    alias = {"alias_name": "507f191e810c19729de860ea", "alias_label": "anonymous_id"}
    assert body_of(event)["events"][0]["user_alias"] == alias
    assert "external_id" not in body_of(event)["events"][0]
    relabelled = body_of(event, settings(anonymous_alias_label="segment_anonymous_id"))["events"][0]
    assert relabelled["user_alias"] == {**alias, "alias_label": "segment_anonymous_id"}
    with pytest.raises(Skip, match="userId"):
        destination.translate(event, settings(anonymous_users="false"))


def test_pages_and_screens_are_viewed_events_only_when_asked():
    with pytest.raises(Skip, match="track pages"):
        destination.translate(spec_events.page(), SETTINGS)
    config = settings(track_pages="true")
    page, screen = spec_events.page(), spec_events.screen()
    assert body_of(page, config) == {
        "events": [
            {**USER, "time": TIME, "name": "Viewed Docs Pricing Page", "properties": page["properties"]}
        ]
    }
    assert body_of(screen, config)["events"][0]["name"] == "Viewed Home Screen"
    unnamed = spec_events.page()
    unnamed.pop("name")
    unnamed["properties"] = {}
    assert body_of(unnamed, config) == {"events": [{**USER, "time": TIME, "name": "Loaded a Page"}]}


def test_alias_is_not_taken():
    with pytest.raises(Skip):
        destination.translate(spec_events.alias(), SETTINGS)


# -- batching -------------------------------------------------------------------------------


def test_2500_events_are_cut_at_75_objects_per_request():
    events = [track("Video Played", {"n": i}) for i in range(2500)]
    requests = render(destination, SETTINGS, events)
    sizes = [len(orjson.loads(request.body)["events"]) for request in requests]
    assert sizes == [75] * 33 + [25]
    assert all(request.header("X-Braze-Batch") == "true" for request in requests)
    numbers = [e["properties"]["n"] for r in requests for e in orjson.loads(r.body)["events"]]
    assert numbers == list(range(2500))


def test_each_request_holds_one_kind_of_object():
    events = [
        spec_events.identify(),
        spec_events.signed_up(),
        spec_events.order_completed(),
        spec_events.group(),
    ]
    bodies = [orjson.loads(request.body) for request in render(destination, SETTINGS, events)]
    assert [(list(body), len(next(iter(body.values())))) for body in bodies] == [
        (["attributes"], 2),
        (["events"], 1),
        (["purchases"], 2),
    ]


def test_batch_size_setting_lowers_the_limit_for_50_object_accounts():
    events = [track("Video Played", {"n": i}) for i in range(120)]
    sizes = [
        len(orjson.loads(r.body)["events"]) for r in render(destination, settings(batch_size="50"), events)
    ]
    assert sizes == [50, 50, 20]


# -- classification -------------------------------------------------------------------------


def events_request(count: int) -> Request:
    [request] = render(destination, SETTINGS, [track("Video Played", {"n": i}) for i in range(count)])
    return request


def classify(status: int, body: Any, headers: dict[str, str] | None = None, count: int = 3):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return destination.classify(Response(status, headers or {}, raw), events_request(count), count)


def test_success_and_queued_are_delivered():
    assert classify(201, {"message": "success", "events_processed": 3}).verdict is Verdict.DELIVERED
    assert classify(202, {"message": "queued"}).verdict is Verdict.DELIVERED


def test_non_fatal_errors_give_up_only_the_objects_they_name():
    body = {
        "message": "success",
        "errors": [
            {"type": "'time' must be a valid ISO-8601 date", "input_array": "events", "index": 1},
            {"type": "unrelated", "input_array": "purchases", "index": 0},  # not in this request
            {"type": "minor error without an index"},
        ],
    }
    outcomes = classify(201, body)
    assert [outcome.verdict for outcome in outcomes] == [
        Verdict.DELIVERED,
        Verdict.GIVE_UP,
        Verdict.DELIVERED,
    ]
    assert "ISO-8601" in outcomes[1].reason


def test_a_4xx_naming_objects_gives_those_up_and_retries_the_others():
    body = {"message": "Bad Request", "errors": [{"type": "bad object", "input_array": "events", "index": 2}]}
    outcomes = classify(400, body)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.RETRY, Verdict.RETRY, Verdict.GIVE_UP]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_fatal_errors_give_up_with_brazes_message(status):
    outcome = classify(status, {"message": "Invalid API key: b7a2"})
    assert outcome.verdict is Verdict.GIVE_UP
    assert f"HTTP {status}" in outcome.reason and "Invalid API key" in outcome.reason


def test_a_429_waits_for_brazes_retry_after_header():
    outcome = classify(429, {"message": "Rate limited"}, {"x-ratelimit-retry-after": "12"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 12.0)
    assert classify(429, b"", {"retry-after": "3"}).retry_after == 3.0


def test_a_429_with_only_x_ratelimit_reset_waits_until_that_epoch_second():
    outcome = classify(429, {"message": "Rate limited"}, {"x-ratelimit-reset": str(int(time.time()) + 30)})
    assert outcome.verdict is Verdict.RETRY
    assert 28 <= outcome.retry_after <= 30


def test_5xx_is_retried_without_mistaking_the_window_reset_for_a_delay():
    outcome = classify(503, b"unavailable", {"x-ratelimit-reset": str(int(time.time()) + 3600)})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, None)


# -- settings -------------------------------------------------------------------------------


def test_a_missing_api_key_is_named():
    with pytest.raises(SettingsError, match="'api_key'"):
        parse_settings(BrazeSettings, {"instance": "US-02"})


def test_the_api_key_is_secret_and_instances_are_choices():
    schema = {spec.name: spec for spec in settings_schema(BrazeSettings)}
    assert schema["api_key"].secret and schema["api_key"].required
    assert schema["instance"].choices[:2] == ("US-01", "US-02")
    assert {"US-10", "EU-01", "EU-02", "AU-01", "ID-01", "JP-01"} <= set(schema["instance"].choices)


def test_instance_and_base_url_choose_the_host():
    assert only_request(spec_events.signed_up(), settings(instance="EU-02")).url == (
        "https://rest.fra-02.braze.eu/users/track"
    )
    proxied = only_request(spec_events.signed_up(), settings(base_url="http://127.0.0.1:9/braze/"))
    assert proxied.url == "http://127.0.0.1:9/braze/users/track"


@pytest.mark.parametrize("size", ["0", "76"])
def test_batch_size_stays_within_brazes_limit(size):
    with pytest.raises(SettingsError, match="batch_size"):
        settings(batch_size=size)


def test_the_catalog_knows_it_by_segments_name():
    entry = registry.get("braze")
    assert entry.name == "Braze"
    assert entry.catalog_entry()["category"] == "marketing automation"


# -- the contract, played by a fake /users/track ---------------------------------------------

ARRAYS = ("attributes", "events", "purchases")
IDENTIFIER_REQUIRED = "'external_id', 'user_alias', 'braze_id', 'email' or 'phone' is required"


def iso_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def identifier_problems(obj: dict[str, Any]) -> list[str]:
    alias = obj.get("user_alias")
    good_alias = isinstance(alias, dict) and all(
        isinstance(alias.get(k), str) for k in ("alias_name", "alias_label")
    )
    ids = [obj.get(key) for key in ("external_id", "braze_id", "email", "phone")]
    if good_alias or any(isinstance(value, str) and value for value in ids):
        return []
    return [IDENTIFIER_REQUIRED]


def event_problems(obj: dict[str, Any]) -> list[str]:
    problems = []
    if not isinstance(obj.get("name"), str) or not obj["name"]:
        problems.append("'name' is required")
    if not iso_time(obj.get("time")):
        problems.append("'time' must be an ISO-8601 date string")
    properties = obj.get("properties", {})
    if not isinstance(properties, dict) or any(str(key).startswith("$") for key in properties):
        problems.append("'properties' must be an object whose keys do not start with $")
    return problems


def purchase_problems(obj: dict[str, Any]) -> list[str]:
    problems = []
    if not isinstance(obj.get("product_id"), str) or not 0 < len(obj["product_id"]) <= 255:
        problems.append("'product_id' is required")
    currency = obj.get("currency")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha() and currency.isupper()):
        problems.append("'currency' must be an ISO 4217 code")
    if isinstance(obj.get("price"), bool) or not isinstance(obj.get("price"), int | float):
        problems.append("'price' must be a number")
    quantity = obj.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 100:
        problems.append("'quantity' must be an integer from 1 to 100")
    if not iso_time(obj.get("time")):
        problems.append("'time' must be an ISO-8601 date string")
    if not isinstance(obj.get("properties", {}), dict):
        problems.append("'properties' must be an object")
    return problems


def attribute_problems(obj: dict[str, Any]) -> list[str]:
    problems = []
    if "gender" in obj and obj["gender"] not in ("M", "F", "O", "N", "P", None):
        problems.append("'gender' must be one of M, F, O, N, P")
    dob = obj.get("dob")
    if dob is not None and not (isinstance(dob, str) and len(dob) == 10 and iso_time(f"{dob}T00:00:00")):
        problems.append("'dob' must be YYYY-MM-DD")
    return problems


CHECKS = {"attributes": attribute_problems, "events": event_problems, "purchases": purchase_problems}


class UsersTrack:
    """Braze's `POST /users/track` as documented: Bearer REST API key (401 otherwise), at
    most 75 objects per array (400 "Max Input Length Exceeded"), an identifier and the
    required fields on every object (each bad object a non-fatal error in a 201 answer),
    ISO-8601 times. `refusals` keeps every non-2xx answer and every non-fatal error."""

    def __init__(self, api_key: str = API_KEY, limit: int = 75) -> None:
        self.api_key, self.limit = api_key, limit
        self.accepted: dict[str, list[dict[str, Any]]] = {array: [] for array in ARRAYS}
        self.refusals: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        status, answer = self.answer(request)
        with self.lock:
            if status >= 300 or answer.get("errors"):
                self.refusals.append((status, answer))
        return ok_json(answer, status)

    def answer(self, request: Captured) -> tuple[int, dict[str, Any]]:
        if request.method != "POST" or request.path != "/users/track":
            return 404, {"message": "Not Found"}
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"message": "Invalid API key: unknown or missing REST API key"}
        if not request.headers.get("content-type", "").startswith("application/json"):
            return 400, {"message": "Bad Request: the body must be JSON"}
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return 400, {"message": "Bad Request: the body is not JSON"}
        if not isinstance(body, dict) or set(body) - set(ARRAYS) or not set(body):
            return 400, {"message": "Bad Request: expected attributes, events or purchases"}
        if any(not isinstance(body[array], list) for array in body):
            return 400, {"message": "Bad Request: attributes, events and purchases are arrays"}
        if any(len(body[array]) > self.limit for array in body):
            return 400, {"message": "Max Input Length Exceeded"}
        return self.process(body)

    def process(self, body: dict[str, list[Any]]) -> tuple[int, dict[str, Any]]:
        answer: dict[str, Any] = {"message": "success"}
        errors = []
        for array, objects in body.items():
            processed = 0
            for index, obj in enumerate(objects):
                problems = (
                    identifier_problems(obj) + CHECKS[array](obj)
                    if isinstance(obj, dict)
                    else ["each object must be a JSON object"]
                )
                if problems:
                    errors.append({"type": problems[0], "input_array": array, "index": index})
                    continue
                processed += 1
                with self.lock:
                    self.accepted[array].append(obj)
            answer[f"{array}_processed"] = processed
        if errors:
            answer["errors"] = errors
        return 201, answer


def send(request: Request) -> httpx.Response:
    return httpx.post(request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = UsersTrack()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url, track_pages="true")
        events = [event for event in spec_events.scenario() if event["type"] != "alias"]
        for request in render(destination, config, events):
            reply = send(request)
            assert reply.status_code == 201
            assert reply.json()["message"] == "success"
    assert contract.refusals == []
    assert [len(contract.accepted[array]) for array in ARRAYS] == [2, 7, 2]


def test_the_fake_refuses_what_braze_refuses():
    contract = UsersTrack()
    request = only_request(spec_events.signed_up())
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url)
        good = only_request(spec_events.signed_up(), config)
        wrong_key = Request(good.method, good.url, (HEADERS[0], ("Authorization", "Bearer nope")), good.body)
        assert send(wrong_key).status_code == 401
        too_many = Request.json(
            good.url, {"events": [orjson.loads(request.body)["events"][0]] * 76}, dict(HEADERS)
        )
        assert send(too_many).json() == {"message": "Max Input Length Exceeded"}
        event = orjson.loads(request.body)["events"][0]
        anonymous = {key: value for key, value in event.items() if key != "external_id"}
        epoch_time = {**copy.deepcopy(event), "time": 1795860005}
        mixed = Request.json(good.url, {"events": [event, anonymous, epoch_time]}, dict(HEADERS))
        assert send(mixed).json() == {
            "message": "success",
            "events_processed": 1,
            "errors": [
                {"type": IDENTIFIER_REQUIRED, "input_array": "events", "index": 1},
                {"type": "'time' must be an ISO-8601 date string", "input_array": "events", "index": 2},
            ],
        }
    assert [status for status, _ in contract.refusals] == [401, 400, 201]
