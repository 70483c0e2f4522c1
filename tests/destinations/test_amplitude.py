"""Amplitude: the Spec scenario translated to exact requests, batching, classification, a contract fake."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import plan_requests, render
from trackyard.destinations import registry
from trackyard.destinations.amplitude import AmplitudeSettings, destination
from trackyard.destinations.base import (
    Outcome,
    Request,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)

API_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
USER_ID = "97980cfea0067"
ANONYMOUS_ID = "507f191e810c19729de860ea"
GROUP_ID = "0e8c78ea9d97a7b8185e8632"
EVENT_TIME = 1795860005180  # 2026-11-28T10:00:05.180Z, the scenario's `timestamp`, in ms
EVENTS_URL = "https://api2.amplitude.com/2/httpapi"
JSON_HEADERS = (("Content-Type", "application/json"),)
FORM_HEADERS = (("Content-Type", "application/x-www-form-urlencoded"),)

ATTRIBUTION = {
    "$set": {
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring_sale",
        "referrer": "https://www.google.com/",
    },
    "$setOnce": {
        "initial_utm_source": "newsletter",
        "initial_utm_medium": "email",
        "initial_utm_campaign": "spring_sale",
        "initial_referrer": "https://www.google.com/",
    },
}
# What every browser event of the Spec scenario carries from its ids and context.
BROWSER_FIELDS: dict[str, Any] = {
    "user_id": USER_ID,
    "device_id": ANONYMOUS_ID,
    "time": EVENT_TIME,
    "ip": "203.0.113.7",
    "language": "en-US",
    "platform": "Web",
    "user_agent": spec_events.CONTEXT["userAgent"],
    "library": "analytics.js/next-1.84.3",
    "user_properties": ATTRIBUTION,
}


def amplitude_settings(**raw: str) -> AmplitudeSettings:
    return parse_settings(AmplitudeSettings, {"api_key": API_KEY, **raw}, "amplitude")


def browser_event(event_type: str, event: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "event_type": event_type,
        **BROWSER_FIELDS,
        "insert_id": event["messageId"],
        "event_properties": event.get("properties") or {},
        **extra,
    }


def events_body(request: Request) -> dict[str, Any]:
    return orjson.loads(request.body)


def form_of(body: bytes) -> dict[str, Any]:
    """The form fields, with the JSON ones decoded."""
    fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
    return {key: value if key == "api_key" else orjson.loads(value) for key, value in fields.items()}


def only(requests: list[Request], path: str) -> Request:
    [request] = [request for request in requests if urlsplit(request.url).path == path]
    return request


# -- the vendor's contract, as a fake -----------------------------------------------------

IDENTIFY_KEYS = {
    "user_id",
    "device_id",
    "user_properties",
    "groups",
    "app_version",
    "platform",
    "os_name",
    "os_version",
    "device_brand",
    "device_manufacturer",
    "device_model",
    "carrier",
    "country",
    "region",
    "city",
    "dma",
    "language",
    "paying",
    "start_version",
}
EARLIEST_TIME_MS = 946_684_800_000  # 2000-01-01: anything smaller is seconds, not milliseconds
MAX_EVENTS = 2000
MAX_GROUP_IDENTIFIES = 1024
MAX_BYTES = {"/2/httpapi": 1_000_000, "/batch": 20_000_000}
DEFAULT_MIN_ID_LENGTH = 5


class AmplitudeContract:
    """Amplitude's ingestion APIs as documented: HTTP V2 / Batch, Identify, Group Identify, usermap."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.errors: list[tuple[str, int, bytes]] = []

    def __call__(self, request: Captured) -> Reply:
        status, headers, body = self.answer(request)
        if status >= 300:
            self.errors.append((request.path, status, body))
        return status, headers, body

    def answer(self, request: Captured) -> Reply:
        if request.method != "POST":
            return ok_json({"code": 405, "error": "method not allowed"}, status=405)
        if request.path in MAX_BYTES:
            return self.events(request)
        if request.path in ("/identify", "/groupidentify", "/usermap"):
            return self.form_call(request)
        return ok_json({"code": 404, "error": "not found"}, status=404)

    def events(self, request: Captured) -> Reply:
        if len(request.body) > MAX_BYTES[request.path]:
            return ok_json({"code": 413, "error": "Payload too large"}, 413)
        if not request.headers.get("content-type", "").startswith("application/json"):
            return ok_json({"code": 400, "error": "Invalid request: expected application/json"}, 400)
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return ok_json({"code": 400, "error": "Invalid JSON request body"}, 400)
        for field in ("api_key", "events"):
            if not isinstance(body, dict) or not body.get(field):
                return ok_json(
                    {"code": 400, "error": "Request missing required field", "missing_field": field}, 400
                )
        if body["api_key"] != self.api_key:
            return ok_json({"code": 400, "error": f"Invalid API key: {body['api_key']}"}, 400)
        events = body["events"]
        if len(events) > MAX_EVENTS:
            return ok_json({"code": 413, "error": "Payload too large"}, 413)
        min_id_length = (body.get("options") or {}).get("min_id_length", DEFAULT_MIN_ID_LENGTH)
        problems: dict[str, dict[str, list[int]]] = {}
        for index, event in enumerate(events):
            for kind, field in _event_problems(event, min_id_length):
                problems.setdefault(kind, {}).setdefault(field, []).append(index)
        if problems:
            return ok_json({"code": 400, "error": "Request has invalid or missing fields", **problems}, 400)
        return ok_json(
            {
                "code": 200,
                "events_ingested": len(events),
                "payload_size_bytes": len(request.body),
                "server_upload_time": int(time.time() * 1000),
            }
        )

    def form_call(self, request: Captured) -> Reply:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return _text(400, "expected a form")
        fields = request.form()
        if fields.get("api_key") != self.api_key:
            return _text(400, "invalid api_key")
        field = "mapping" if request.path == "/usermap" else "identification"
        try:
            items = orjson.loads(fields[field])
            options = orjson.loads(fields.get("options", "{}"))
        except (KeyError, orjson.JSONDecodeError):
            return _text(400, f"missing or invalid {field}")
        items = items if isinstance(items, list) else [items]
        check = {
            "/identify": _identify_problem,
            "/groupidentify": _group_problem,
            "/usermap": _mapping_problem,
        }
        min_id_length = options.get("min_id_length", DEFAULT_MIN_ID_LENGTH)
        problem = next(filter(None, (check[request.path](item, min_id_length) for item in items)), None)
        if request.path == "/groupidentify" and len(items) > MAX_GROUP_IDENTIFIES:
            problem = f"at most {MAX_GROUP_IDENTIFIES} group identifies per request"
        return _text(400, problem) if problem else _text(200, "success")


def _event_problems(event: Any, min_id_length: int) -> list[tuple[str, str]]:
    if not isinstance(event, dict):
        return [("events_with_invalid_fields", "event")]
    problems = []
    if not isinstance(event.get("event_type"), str) or not event["event_type"]:
        problems.append(("events_with_missing_fields", "event_type"))
    problems += _id_problems(event, min_id_length)
    moment = event.get("time")
    if moment is not None and (
        not isinstance(moment, int) or isinstance(moment, bool) or moment < EARLIEST_TIME_MS
    ):
        problems.append(("events_with_invalid_fields", "time"))
    if not isinstance(event.get("insert_id", ""), str):
        problems.append(("events_with_invalid_fields", "insert_id"))
    if _mixes_operations(event.get("user_properties")):
        problems.append(("events_with_invalid_fields", "user_properties"))
    return problems


def _id_problems(item: dict[str, Any], min_id_length: int) -> list[tuple[str, str]]:
    ids = {key: item.get(key) for key in ("user_id", "device_id") if item.get(key) is not None}
    if not ids:
        return [("events_with_missing_fields", "device_id")]
    return [
        ("events_with_invalid_id_lengths", key)
        for key, value in ids.items()
        if not isinstance(value, str) or len(value) < min_id_length
    ]


def _mixes_operations(properties: Any) -> bool:
    """Amplitude rejects user properties mixing operations (`$set`…) with plain keys."""
    if not isinstance(properties, dict):
        return properties is not None
    operations = [key for key in properties if key.startswith("$")]
    return bool(operations) and (len(operations) != len(properties))


def _identify_problem(item: Any, min_id_length: int) -> str | None:
    if not isinstance(item, dict):
        return "each identification must be an object"
    if unknown := set(item) - IDENTIFY_KEYS:
        return f"unknown identification fields {sorted(unknown)}"
    if _id_problems(item, min_id_length):
        return "user_id or device_id missing or too short"
    if _mixes_operations(item.get("user_properties")):
        return "user_properties mixes operations with plain properties"
    return None


def _group_problem(item: Any, _: int) -> str | None:
    if not isinstance(item, dict) or not isinstance(item.get("group_type"), str):
        return "group_type is required"
    if not isinstance(item.get("group_value"), str) or not isinstance(item.get("group_properties"), dict):
        return "group_value (a string) and group_properties (an object) are required"
    return None


def _mapping_problem(item: Any, _: int) -> str | None:
    if not isinstance(item, dict) or not item.get("user_id"):
        return "user_id is required"
    if not item.get("global_user_id") and item.get("unmap") is not True:
        return "global_user_id (or unmap) is required"
    return None


def _text(status: int, text: str) -> Reply:
    return status, {"Content-Type": "text/plain"}, text.encode()


def post(request: Request) -> Response:
    reply = httpx.request(request.method, request.url, headers=dict(request.headers), content=request.body)
    return Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content)


def outcomes_of(request: Request, count: int) -> list[Outcome]:
    result = destination.classify(post(request), request, count)
    return result if isinstance(result, list) else [result] * count


# -- catalog and settings -----------------------------------------------------------------


def test_catalog_metadata_uses_segments_name():
    assert registry.get("amplitude") is destination
    entry = destination.catalog_entry()
    assert (entry["slug"], entry["name"], entry["category"]) == ("amplitude", "Amplitude", "analytics")
    assert destination.dedupe_field == "insert_id"


def test_missing_api_key_is_named():
    with pytest.raises(SettingsError, match="'api_key'"):
        parse_settings(AmplitudeSettings, {"region": "EU"}, "amplitude")


def test_api_key_is_secret_and_region_is_a_choice():
    specs = {spec.name: spec for spec in settings_schema(AmplitudeSettings)}
    assert specs["api_key"].secret and specs["api_key"].required
    assert specs["region"].choices == ("US", "EU")
    with pytest.raises(SettingsError, match="'region' must be one of US, EU"):
        amplitude_settings(region="IN")
    with pytest.raises(SettingsError, match="'min_id_length' must be a non-negative integer"):
        amplitude_settings(min_id_length="-1")


# -- track --------------------------------------------------------------------------------


def test_product_viewed_is_one_http_v2_event():
    event = spec_events.product_viewed()
    [request] = render(destination, amplitude_settings(), [event])
    assert (request.method, request.url, request.headers) == ("POST", EVENTS_URL, JSON_HEADERS)
    assert events_body(request) == {
        "api_key": API_KEY,
        "events": [
            {
                "event_type": "Product Viewed",
                "user_id": USER_ID,
                "device_id": ANONYMOUS_ID,
                "time": EVENT_TIME,
                "insert_id": "ajs-next-1764324000000-pv-0003",
                "event_properties": {
                    "product_id": "507f1f77",
                    "sku": "G-32",
                    "category": "Games",
                    "name": "Monopoly: 3rd Edition",
                    "brand": "Hasbro",
                    "variant": "200 pieces",
                    "price": 18.99,
                    "quantity": 1,
                    "coupon": "MAYDEALS",
                    "position": 3,
                    "url": "https://shop.example/product/path",
                    "image_url": "https://shop.example/product/path.jpg",
                    "currency": "USD",
                    "value": 18.99,
                },
                "user_properties": ATTRIBUTION,
                "ip": "203.0.113.7",
                "language": "en-US",
                "platform": "Web",
                "user_agent": spec_events.CONTEXT["userAgent"],
                "library": "analytics.js/next-1.84.3",
            }
        ],
    }


@pytest.mark.parametrize(
    "make_event",
    [
        spec_events.product_added,
        spec_events.checkout_started,
        spec_events.products_searched,
        spec_events.signed_up,
    ],
)
def test_track_events_keep_their_name_and_properties(make_event):
    event = make_event()
    [request] = render(destination, amplitude_settings(), [event])
    assert events_body(request) == {"api_key": API_KEY, "events": [browser_event(event["event"], event)]}


def test_order_completed_carries_revenue_and_one_product_purchased_per_product():
    order = spec_events.order_completed()
    [request] = render(destination, amplitude_settings(), [order])
    assert request.url == EVENTS_URL
    assert events_body(request)["events"] == [
        browser_event("Order Completed", order, revenue=25.0, revenueType="Purchase"),
        {
            **BROWSER_FIELDS,
            "event_type": "Product Purchased",
            "insert_id": "ajs-next-1764324000000-oc-0002-product-1",
            "event_properties": spec_events.PRODUCTS[0],
        },
        {
            **BROWSER_FIELDS,
            "event_type": "Product Purchased",
            "insert_id": "ajs-next-1764324000000-oc-0002-product-2",
            "event_properties": spec_events.PRODUCTS[1],
        },
    ]


def test_revenue_per_product_moves_revenue_to_the_products():
    order = spec_events.order_completed()
    [request] = render(destination, amplitude_settings(track_revenue_per_product="true"), [order])
    main, first, second = events_body(request)["events"]
    assert "revenue" not in main
    revenue_keys = ("revenue", "price", "quantity", "productId", "revenueType")
    assert {key: first[key] for key in revenue_keys} == {
        "revenue": 18.99,
        "price": 18.99,
        "quantity": 1,
        "productId": "507f1f77",
        "revenueType": "Purchase",
    }
    assert {key: second[key] for key in revenue_keys} == {
        "revenue": 6.0,
        "price": 3.0,
        "quantity": 2,
        "productId": "505bd76",
        "revenueType": "Purchase",
    }


def test_order_revenue_falls_back_to_total():
    order = spec_events.order_completed()
    del order["properties"]["revenue"]
    [request] = render(destination, amplitude_settings(), [order])
    assert events_body(request)["events"][0]["revenue"] == 27.5


def test_session_id_and_groups_come_from_the_integrations_object():
    event = spec_events.signed_up()
    event["integrations"] = {"Amplitude": {"session_id": "1764324000000", "groups": {"company": "initech"}}}
    [request] = render(destination, amplitude_settings(), [event])
    sent = events_body(request)["events"][0]
    assert (sent["session_id"], sent["groups"]) == (1764324000000, {"company": "initech"})


# -- page and screen ------------------------------------------------------------------------


def test_page_is_viewed_name_with_page_properties():
    event = spec_events.page()
    [request] = render(destination, amplitude_settings(), [event])
    assert events_body(request)["events"] == [browser_event("Viewed Pricing", event)]


def test_unnamed_screen_is_loaded_a_screen():
    event = spec_events.screen()
    del event["name"]
    [request] = render(destination, amplitude_settings(), [event])
    assert events_body(request)["events"][0]["event_type"] == "Loaded a Screen"


def test_screen_maps_the_mobile_context():
    [request] = render(destination, amplitude_settings(), [spec_events.screen()])
    assert events_body(request)["events"] == [
        {
            "event_type": "Viewed Home",
            "user_id": USER_ID,
            "device_id": "B5372DB0",
            "time": EVENT_TIME,
            "insert_id": "ios-0009",
            "event_properties": {"variation": "blue"},
            "ip": "203.0.113.9",
            "app_version": "3.2.1",
            "os_name": "iOS",
            "os_version": "17.1",
            "device_manufacturer": "Apple",
            "device_model": "iPhone15,2",
            "platform": "iOS",
            "idfv": "B5372DB0",
            "library": "analytics-swift/1.5.0",
        }
    ]


# -- identify, group, alias -------------------------------------------------------------------


def test_identify_uses_the_identify_api_with_traits_in_set():
    [request] = render(destination, amplitude_settings(), [spec_events.identify()])
    assert (request.method, request.url, request.headers) == (
        "POST",
        "https://api2.amplitude.com/identify",
        FORM_HEADERS,
    )
    traits = spec_events.identify()["traits"]
    assert form_of(request.body) == {
        "api_key": API_KEY,
        "identification": [
            {
                "user_id": USER_ID,
                "device_id": ANONYMOUS_ID,
                "language": "en-US",
                "platform": "Web",
                "user_properties": {
                    "$set": {**traits, **ATTRIBUTION["$set"]},
                    "$setOnce": ATTRIBUTION["$setOnce"],
                },
            }
        ],
    }


def test_min_id_length_is_passed_as_options():
    settings = amplitude_settings(min_id_length="3")
    identify, track = render(destination, settings, [spec_events.identify(), spec_events.signed_up()])
    assert form_of(identify.body)["options"] == {"min_id_length": 3}
    assert events_body(track)["options"] == {"min_id_length": 3}


def test_group_adds_the_group_to_the_user_and_sets_group_properties():
    membership, group_identify = render(destination, amplitude_settings(), [spec_events.group()])
    assert (membership.url, membership.headers) == ("https://api2.amplitude.com/identify", FORM_HEADERS)
    assert form_of(membership.body) == {
        "api_key": API_KEY,
        "identification": [
            {
                "user_id": USER_ID,
                "device_id": ANONYMOUS_ID,
                "groups": {"[Segment] Group": GROUP_ID},
                "user_properties": {"$set": {"[Segment] Group": GROUP_ID}},
            }
        ],
    }
    assert (group_identify.url, group_identify.headers) == (
        "https://api2.amplitude.com/groupidentify",
        FORM_HEADERS,
    )
    assert form_of(group_identify.body) == {
        "api_key": API_KEY,
        "identification": [
            {
                "group_type": "[Segment] Group",
                "group_value": GROUP_ID,
                "group_properties": spec_events.group()["traits"],
            }
        ],
    }


def test_group_type_and_value_traits_name_the_group():
    settings = amplitude_settings(group_type_trait="industry", group_value_trait="name")
    membership, group_identify = render(destination, settings, [spec_events.group()])
    assert form_of(membership.body)["identification"][0]["groups"] == {"Technology": "Initech"}
    identification = form_of(group_identify.body)["identification"][0]
    assert (identification["group_type"], identification["group_value"]) == ("Technology", "Initech")


def test_alias_is_skipped_without_the_portfolio_setting():
    with pytest.raises(Skip, match="Portfolio"):
        destination.translate(spec_events.alias(), amplitude_settings())


def test_alias_maps_the_previous_id_to_the_user():
    [request] = render(destination, amplitude_settings(map_aliases="true"), [spec_events.alias()])
    assert (request.url, request.headers) == ("https://api.amplitude.com/usermap", FORM_HEADERS)
    assert form_of(request.body) == {
        "api_key": API_KEY,
        "mapping": [{"user_id": ANONYMOUS_ID, "global_user_id": USER_ID}],
    }


# -- hosts ----------------------------------------------------------------------------------------


def scenario_paths_and_hosts(settings: AmplitudeSettings) -> set[str]:
    requests = render(destination, settings, spec_events.scenario())
    return {request.url for request in requests}


def test_us_hosts():
    assert scenario_paths_and_hosts(amplitude_settings(map_aliases="true")) == {
        "https://api2.amplitude.com/2/httpapi",
        "https://api2.amplitude.com/identify",
        "https://api2.amplitude.com/groupidentify",
        "https://api.amplitude.com/usermap",
    }


def test_eu_hosts_and_the_batch_endpoint():
    settings = amplitude_settings(map_aliases="true", region="EU", use_batch_endpoint="true")
    assert scenario_paths_and_hosts(settings) == {
        "https://api.eu.amplitude.com/batch",
        "https://api.eu.amplitude.com/identify",
        "https://api.eu.amplitude.com/groupidentify",
        "https://api.eu.amplitude.com/usermap",
    }


def test_base_url_overrides_every_host():
    settings = amplitude_settings(map_aliases="true", base_url="http://127.0.0.1:9/amp/")
    assert {urlsplit(url).netloc + urlsplit(url).path for url in scenario_paths_and_hosts(settings)} == {
        "127.0.0.1:9/amp/2/httpapi",
        "127.0.0.1:9/amp/identify",
        "127.0.0.1:9/amp/groupidentify",
        "127.0.0.1:9/amp/usermap",
    }


# -- batching -----------------------------------------------------------------------------------


def numbered_tracks(count: int, padding: str = "") -> list[dict[str, Any]]:
    events = []
    for number in range(count):
        event = spec_events.signed_up()
        event["messageId"] = f"m-{number}"
        event["properties"]["padding"] = padding
        events.append(event)
    return events


def test_2500_events_are_cut_at_1000_per_request_in_order():
    requests = render(destination, amplitude_settings(), numbered_tracks(2500))
    batches = [events_body(request)["events"] for request in requests]
    assert [len(batch) for batch in batches] == [1000, 1000, 500]
    assert [event["insert_id"] for batch in batches for event in batch] == [f"m-{n}" for n in range(2500)]


def test_batches_stay_under_one_megabyte():
    requests = render(destination, amplitude_settings(), numbered_tracks(600, padding="x" * 4000))
    assert len(requests) == 4  # about 4.9 kB per event: 3 MB in all
    assert all(len(request.body) < 1_000_000 for request in requests)
    assert sum(len(events_body(request)["events"]) for request in requests) == 600


# -- classification -------------------------------------------------------------------------------


def events_request(count: int = 4) -> Request:
    return render(destination, amplitude_settings(), numbered_tracks(count))[0]


def identify_request() -> Request:
    return render(destination, amplitude_settings(), [spec_events.identify()])[0]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"content-type": "application/json", **(headers or {})}, orjson.dumps(body))


def verdicts(outcomes: list[Outcome]) -> list[Verdict]:
    return [outcome.verdict for outcome in outcomes]


def test_success_is_delivered():
    response = json_response(
        200, {"code": 200, "events_ingested": 4, "payload_size_bytes": 2000, "server_upload_time": 1}
    )
    assert destination.classify(response, events_request(), 4).verdict is Verdict.DELIVERED


def test_400_gives_up_only_the_listed_events_and_resends_the_rest():
    response = json_response(
        400,
        {
            "code": 400,
            "error": "Request has invalid or missing fields",
            "events_with_invalid_fields": {"time": [1]},
            "events_with_missing_fields": {"event_type": [3]},
        },
    )
    outcomes = destination.classify(response, events_request(), 4)
    assert verdicts(outcomes) == [Verdict.RETRY, Verdict.GIVE_UP, Verdict.RETRY, Verdict.GIVE_UP]
    assert outcomes[1].reason == "Amplitude rejected the event: invalid field 'time'"
    assert outcomes[3].reason == "Amplitude rejected the event: missing field 'event_type'"


def test_400_id_lengths_and_silenced_devices_give_up_those_events():
    response = json_response(
        400,
        {
            "code": 400,
            "error": "Invalid id length",
            "events_with_invalid_id_lengths": {"user_id": [0]},
            "silenced_events": [2],
        },
    )
    outcomes = destination.classify(response, events_request(), 4)
    assert verdicts(outcomes) == [Verdict.GIVE_UP, Verdict.RETRY, Verdict.GIVE_UP, Verdict.RETRY]


@pytest.mark.parametrize(
    "body",
    [
        {"code": 400, "error": "Invalid API key: 0f1e2d3c"},
        {"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    ],
)
def test_400_about_the_whole_request_gives_up_every_event(body):
    outcome = destination.classify(json_response(400, body), events_request(), 4)
    assert outcome.verdict is Verdict.GIVE_UP
    assert outcome.reason.startswith("HTTP 400: ")


def test_413_gives_up():
    outcome = destination.classify(
        json_response(413, {"code": 413, "error": "Payload too large"}), events_request(), 4
    )
    assert outcome.verdict is Verdict.GIVE_UP


def test_429_gives_up_over_quota_events_and_delays_throttled_ones():
    request = events_request(3)
    sent = events_body(request)["events"]
    sent[2]["user_id"] = "quota-buster"
    request = Request(
        request.method, request.url, request.headers, orjson.dumps({"api_key": API_KEY, "events": sent})
    )
    response = json_response(
        429,
        {
            "code": 429,
            "error": "Too many requests for some devices and users",
            "eps_threshold": 30,
            "throttled_devices": {ANONYMOUS_ID: 31},
            "throttled_users": {USER_ID: 31, "quota-buster": 40},
            "throttled_events": [1, 2],
            "exceeded_daily_quota_users": {"quota-buster": 500001},
            "exceeded_daily_quota_devices": {},
        },
    )
    outcomes = destination.classify(response, request, 3)
    assert [(outcome.verdict, outcome.retry_after) for outcome in outcomes] == [
        (Verdict.RETRY, None),
        (Verdict.RETRY, 30.0),
        (Verdict.GIVE_UP, None),
    ]


def test_429_without_details_waits_30_seconds_or_the_retry_after():
    body = {"code": 429, "error": "Too many requests"}
    plain = destination.classify(json_response(429, body), events_request(), 4)
    told = destination.classify(json_response(429, body, {"retry-after": "3"}), events_request(), 4)
    assert (plain.verdict, plain.retry_after) == (Verdict.RETRY, 30.0)
    assert (told.verdict, told.retry_after) == (Verdict.RETRY, 3.0)


def test_identify_429_pauses_15_seconds():
    outcome = destination.classify(Response(429, {}, b"throttled"), identify_request(), 1)
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 15.0)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_timeouts_and_server_errors_are_retried(status):
    assert destination.classify(Response(status, {}, b""), events_request(), 4).verdict is Verdict.RETRY
    assert destination.classify(Response(status, {}, b""), identify_request(), 1).verdict is Verdict.RETRY


def test_identify_success_and_rejection():
    assert (
        destination.classify(Response(200, {}, b"success"), identify_request(), 1).verdict
        is Verdict.DELIVERED
    )
    rejected = destination.classify(Response(400, {}, b"invalid api_key"), identify_request(), 1)
    assert (rejected.verdict, rejected.reason) == (Verdict.GIVE_UP, "HTTP 400: invalid api_key")


# -- against the contract fake ----------------------------------------------------------------------


def test_the_whole_scenario_is_accepted_by_the_contract_fake():
    contract = AmplitudeContract()
    with FakeVendor(contract) as fake:
        settings = amplitude_settings(map_aliases="true", base_url=fake.url)
        payloads = [
            (index, payload)
            for index, event in enumerate(spec_events.scenario())
            for payload in destination.translate(event, settings)
        ]
        planned = plan_requests(destination, settings, payloads)
        outcomes = [outcome for plan in planned for outcome in outcomes_of(plan.request, len(plan.items))]
    assert contract.errors == []
    assert sorted(urlsplit(plan.request.url).path for plan in planned) == [
        "/2/httpapi",
        "/groupidentify",
        "/identify",
        "/usermap",
    ]
    assert len(outcomes) == len(payloads) == 14  # 11 messages, 2 Product Purchased, the group membership
    assert {outcome.verdict for outcome in outcomes} == {Verdict.DELIVERED}


def test_the_fake_rejects_a_wrong_api_key_and_the_request_gives_up():
    with FakeVendor(AmplitudeContract()) as fake:
        settings = amplitude_settings(api_key="not-the-key", base_url=fake.url)
        request = render(destination, settings, [spec_events.signed_up()])[0]
        response = post(request)
    assert (response.status, response.json()) == (400, {"code": 400, "error": "Invalid API key: not-the-key"})
    assert destination.classify(response, request, 1).verdict is Verdict.GIVE_UP


def test_the_fake_rejects_bad_events_and_only_those_give_up():
    with FakeVendor(AmplitudeContract()) as fake:
        request = render(destination, amplitude_settings(base_url=fake.url), numbered_tracks(3))[0]
        body = events_body(request)
        body["events"][0]["time"] //= 1000  # seconds: the wrong unit
        body["events"][2]["user_id"] = "u1"  # shorter than Amplitude's 5 characters
        del body["events"][2]["device_id"]
        broken = Request(request.method, request.url, request.headers, orjson.dumps(body))
        response = post(broken)
        outcomes = destination.classify(response, broken, 3)
    assert response.status == 400
    assert response.json()["events_with_invalid_fields"] == {"time": [0]}
    assert response.json()["events_with_invalid_id_lengths"] == {"user_id": [2]}
    assert verdicts(outcomes) == [Verdict.GIVE_UP, Verdict.RETRY, Verdict.GIVE_UP]


def test_the_fake_rejects_user_properties_mixing_operations():
    with FakeVendor(AmplitudeContract()) as fake:
        request = render(destination, amplitude_settings(base_url=fake.url), [spec_events.identify()])[0]
        [identification] = form_of(request.body)["identification"]
        identification["user_properties"]["plan"] = "premium"
        fields = {"api_key": API_KEY, "identification": orjson.dumps([identification]).decode()}
        broken = Request(request.method, request.url, request.headers, urlencode(fields).encode())
        outcome = destination.classify(post(broken), broken, 1)
    assert outcome.verdict is Verdict.GIVE_UP
    assert "mixes operations" in outcome.reason
