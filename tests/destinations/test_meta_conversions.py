"""Meta Conversions API: exact requests for the Spec events and appendix A.7, hashing of
user_data, local refusals, batching, classification of Graph answers, settings, and the
Spec scenario against a fake that checks Meta's documented contract.

Meta refuses events older than 7 days, so every event here is re-dated to an hour ago
(`recent`) and the expected `event_time` follows from that.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations import hashing, registry
from trackyard.destinations.base import (
    Request,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.meta_conversions import MetaConversionsSettings, destination

PIXEL_ID = "1234567890123456"
TOKEN = "EAAGm0PX4ZCpsBA-system-user-token"
SETTINGS = parse_settings(MetaConversionsSettings, {"pixel_id": PIXEL_ID, "access_token": TOKEN})
URL = f"https://graph.facebook.com/v24.0/{PIXEL_ID}/events"
HEADERS = (("Content-Type", "application/json"), ("Authorization", f"Bearer {TOKEN}"))
EVENT_TIME = int(time.time()) - 3600
USER_AGENT = spec_events.CONTEXT["userAgent"]
SPEC_USER = {
    "em": hashing.sha256_hex("peter@example.com"),
    "external_id": [hashing.sha256_hex("97980cfea0067")],
    "client_ip_address": "203.0.113.7",
    "client_user_agent": USER_AGENT,
}
CHECKOUT_URL = "https://shop.example/checkout?utm_source=newsletter"
PRODUCT = {"id": "507f1f77", "quantity": 1, "item_price": 18.99}
CART = [PRODUCT, {"id": "505bd76", "quantity": 2, "item_price": 3.0}]


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.180Z")


def recent(event: dict[str, Any], seconds: int = EVENT_TIME) -> dict[str, Any]:
    event["timestamp"] = iso(seconds)
    return event


def settings(**overrides: str) -> MetaConversionsSettings:
    return parse_settings(MetaConversionsSettings, {"pixel_id": PIXEL_ID, "access_token": TOKEN, **overrides})


def only_request(event: dict[str, Any], config: MetaConversionsSettings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def server_event(event: dict[str, Any], config: MetaConversionsSettings = SETTINGS) -> dict[str, Any]:
    [body] = orjson.loads(only_request(event, config).body)["data"]
    return body


def expected(event: dict[str, Any], name: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_name": name,
        "event_time": EVENT_TIME,
        "event_id": event["messageId"],
        "action_source": "website",
        "event_source_url": CHECKOUT_URL,
        "user_data": SPEC_USER,
        **fields,
    }


def track(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return recent(spec_events.track(name, properties, f"m-{name}"))


# -- the Spec events ---------------------------------------------------------------------------


def test_catalog_knows_it_by_segments_name():
    entry = registry.get("meta_conversions").catalog_entry()
    assert (entry["name"], entry["category"]) == ("Facebook Conversions API (Actions)", "advertising")


def test_order_completed_is_a_purchase_posted_with_the_bearer_token():
    event = recent(spec_events.order_completed())
    request = only_request(event)
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    assert orjson.loads(request.body) == {
        "data": [
            expected(
                event,
                "Purchase",
                custom_data={"currency": "USD", "value": 25.0, "contents": CART},
            )
        ]
    }


@pytest.mark.parametrize(
    ("make", "name", "custom_data"),
    [
        (
            spec_events.product_viewed,
            "ViewContent",
            {"currency": "USD", "value": 18.99, "content_ids": ["507f1f77"], "contents": [PRODUCT]},
        ),
        (
            spec_events.product_added,
            "AddToCart",
            {"value": 18.99, "content_ids": ["507f1f77"], "contents": [PRODUCT]},
        ),
        (
            spec_events.checkout_started,
            "InitiateCheckout",
            {"currency": "USD", "value": 25.0, "contents": CART},
        ),
        (spec_events.products_searched, "Search", {"search_string": "blue roses"}),
        (spec_events.signed_up, "Signed Up", {"plan": "pro", "trial": True, "seats": 3}),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_each_ecommerce_event_becomes_its_standard_event(make, name, custom_data):
    event = recent(make())
    request = only_request(event)
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    assert orjson.loads(request.body) == {"data": [expected(event, name, custom_data=custom_data)]}


def test_page_is_a_page_view_of_its_url():
    event = recent(spec_events.page())
    assert orjson.loads(only_request(event).body) == {
        "data": [expected(event, "PageView", event_source_url="https://shop.example/pricing")]
    }


@pytest.mark.parametrize(
    "make", [spec_events.identify, spec_events.group, spec_events.screen, spec_events.alias]
)
def test_calls_meta_has_no_event_for_are_skipped(make):
    with pytest.raises(Skip, match="does not take"):
        destination.translate(recent(make()), SETTINGS)


def test_the_rest_of_segments_ecommerce_names():
    wishlist = track("Product Added to Wishlist", {"product_id": "p1", "price": 5, "currency": "eur"})
    assert server_event(wishlist)["event_name"] == "AddToWishlist"
    assert server_event(wishlist)["custom_data"] == {
        "currency": "EUR",
        "value": 5,
        "content_ids": ["p1"],
        "contents": [{"id": "p1", "item_price": 5}],
    }
    listed = track("Product List Viewed", {"products": [{"product_id": "p1"}, {"sku": "S-2"}, {"name": "x"}]})
    assert (server_event(listed)["event_name"], server_event(listed)["custom_data"]) == (
        "ViewContent",
        {"content_ids": ["p1", "S-2"], "contents": [{"id": "p1"}, {"id": "S-2"}]},
    )
    payment = track("Payment Info Entered", {"total": "30.5", "currency": "USD"})
    assert server_event(payment)["event_name"] == "AddPaymentInfo"
    assert server_event(payment)["custom_data"] == {"currency": "USD", "value": 30.5}


# -- appendix A.7 ------------------------------------------------------------------------------

INPUT_T = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u123",
    "anonymousId": "a-1",
    "messageId": "m-1",
    "timestamp": "2024-05-01T12:00:00.000Z",
    "receivedAt": "2024-05-01T12:00:01.000Z",
    "context": {
        "ip": "203.0.113.7",
        "userAgent": "Mozilla/5.0",
        "page": {"url": "https://shop.example/checkout"},
        "traits": {
            "email": "jane.doe@example.com",
            "phone": "+1 (555) 123-4567",
            "firstName": "Jane",
            "lastName": "Doe",
            "address": {"city": "New York", "state": "New York", "postalCode": "10001", "country": "US"},
        },
    },
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


def test_appendix_a7_worked_translation():
    """A.7 as written, plus the two documented changes: the event re-dated to an hour ago
    (A.7's 2024 date is older than 7 days) and `country`, which we map and Segment does not."""
    event = recent(copy.deepcopy(INPUT_T))
    assert server_event(event) == {
        "event_name": "Purchase",
        "event_time": EVENT_TIME,
        "event_id": "m-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout",
        "user_data": {
            "em": "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d",
            "ph": "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a",
            "fn": "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2",
            "ln": "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f",
            "ct": "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5",
            "st": "1b06e2003f8420d6fa42badd8f77ec0f706b976b7a48b13c567dc5a559681683",
            "zp": "e443169117a184f91186b401133b20be670c7c0896f9886075e5d9b81e9d076b",
            "country": "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621",
            "external_id": ["06c0a1fbb20ef07684b202620d0ab29ee0c6cb427998991ce57b5ceee2584b78"],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": "Mozilla/5.0",
        },
        "custom_data": {
            "currency": "USD",
            "value": 25,
            "contents": [
                {"id": "p1", "quantity": 2, "item_price": 10},
                {"id": "p2", "quantity": 1, "item_price": 5},
            ],
        },
    }


# -- user_data ---------------------------------------------------------------------------------


def test_every_trait_meta_matches_on_is_hashed_field_by_field():
    event = recent(spec_events.signed_up())
    event["context"]["traits"] = {
        **spec_events.identify()["traits"],
        "gender": "Male",
        "birthday": "1990-01-15",
    }
    assert server_event(event, settings(phone_country_code="1"))["user_data"] == {
        "em": hashing.sha256_hex("peter@example.com"),
        "ph": hashing.sha256_hex("15550109999"),
        "fn": hashing.sha256_hex("peter"),
        "ln": hashing.sha256_hex("gibbons"),
        "ge": hashing.sha256_hex("m"),
        "db": hashing.sha256_hex("19900115"),
        "ct": hashing.sha256_hex("sanfrancisco"),
        "st": hashing.sha256_hex("ca"),
        "zp": hashing.sha256_hex("94107"),
        "country": hashing.sha256_hex("us"),
        "external_id": [hashing.sha256_hex("97980cfea0067")],
        "client_ip_address": "203.0.113.7",
        "client_user_agent": USER_AGENT,
    }


def test_ip_user_agent_fbc_and_fbp_are_never_hashed():
    event = track("Lead", {"fbc": "fb.1.1554763741205.AbCdEf", "fbp": "fb.1.1558571054389.1098115397"})
    user = server_event(event)["user_data"]
    assert (user["client_ip_address"], user["client_user_agent"]) == ("203.0.113.7", USER_AGENT)
    assert (user["fbc"], user["fbp"]) == ("fb.1.1554763741205.AbCdEf", "fb.1.1558571054389.1098115397")


def test_fbc_is_built_from_the_fbclid_of_the_page_as_meta_documents():
    event = track("Lead", {})
    event["context"]["page"]["url"] = "https://shop.example/?fbclid=IwAR2F4-dbP0l7Mn1IawQQGCINEz7P"
    assert (
        server_event(event)["user_data"]["fbc"] == f"fb.1.{EVENT_TIME * 1000}.IwAR2F4-dbP0l7Mn1IawQQGCINEz7P"
    )


def test_external_id_falls_back_to_the_anonymous_id_and_skips_already_hashed_traits():
    event = track("Lead", {})
    del event["userId"]
    digest = hashing.sha256_hex("peter@example.com")
    event["context"]["traits"] = {"email": digest.upper()}
    user = server_event(event)["user_data"]
    assert user["external_id"] == [hashing.sha256_hex("507f191e810c19729de860ea")]
    assert user["em"] == digest


def test_unusable_traits_are_left_out_rather_than_hashed():
    event = track("Lead", {})
    event["context"]["traits"] = {"email": "not-an-email", "phone": "n/a", "gender": "x", "birthday": "soon"}
    assert set(server_event(event)["user_data"]) == {"external_id", "client_ip_address", "client_user_agent"}


# -- local refusals and choices ------------------------------------------------------------------


def test_events_older_than_seven_days_are_skipped_with_their_age():
    eight_days = recent(spec_events.order_completed(), int(time.time()) - 8 * 86400)
    with pytest.raises(Skip, match=r"8\.0 days old; Meta refuses events older than 7 days"):
        destination.translate(eight_days, SETTINGS)
    six_days = recent(spec_events.order_completed(), int(time.time()) - 6 * 86400)
    assert destination.translate(six_days, SETTINGS)


def test_action_source_comes_from_the_event_or_the_setting():
    assert server_event(track("Lead", {"action_source": "email"}))["action_source"] == "email"
    assert server_event(track("Lead", {}), settings(action_source="physical_store"))["action_source"] == (
        "physical_store"
    )
    with pytest.raises(Skip, match="action_source 'app'"):
        destination.translate(track("Lead", {"action_source": "app"}), SETTINGS)


def test_website_events_need_a_user_agent_and_a_url_others_do_not():
    event = track("Lead", {})
    del event["context"]["userAgent"]
    with pytest.raises(Skip, match="user agent"):
        destination.translate(event, SETTINGS)
    body = server_event(event, settings(action_source="system_generated"))
    assert "client_user_agent" not in body["user_data"]
    event = track("Lead", {})
    del event["context"]["page"]
    with pytest.raises(Skip, match="page URL"):
        destination.translate(event, SETTINGS)


def test_a_purchase_needs_a_currency_and_a_value():
    with pytest.raises(Skip, match="currency"):
        destination.translate(track("Order Completed", {"revenue": 10}), SETTINGS)
    with pytest.raises(Skip, match="value"):
        destination.translate(track("Order Completed", {"currency": "USD"}), SETTINGS)
    with pytest.raises(Skip, match="ISO 4217"):
        destination.translate(track("Order Completed", {"revenue": 10, "currency": "dollars"}), SETTINGS)


def test_custom_events_keep_their_properties_but_no_personal_data():
    event = track("Trial Converted", {"plan": "pro", "email": "a@b.co", "action_source": "chat", "fbp": "x"})
    assert server_event(event)["custom_data"] == {"plan": "pro"}
    with pytest.raises(Skip, match="at most 50 characters"):
        destination.translate(track("x" * 51, {}), SETTINGS)


def test_test_event_code_api_version_and_base_url():
    config = settings(test_event_code="TEST4039", api_version="v25.0", base_url="http://127.0.0.1:9/graph/")
    request = only_request(recent(spec_events.signed_up()), config)
    assert request.url == f"http://127.0.0.1:9/graph/v25.0/{PIXEL_ID}/events"
    assert orjson.loads(request.body)["test_event_code"] == "TEST4039"


# -- batching ----------------------------------------------------------------------------------


def test_2500_events_are_cut_at_1000_per_request_in_order():
    events = [track("Video Played", {"n": n}) for n in range(2500)]
    requests = render(destination, SETTINGS, events)
    bodies = [orjson.loads(request.body)["data"] for request in requests]
    assert [len(body) for body in bodies] == [1000, 1000, 500]
    assert [event["custom_data"]["n"] for body in bodies for event in body] == list(range(2500))


def test_the_batch_size_setting_lowers_the_limit():
    events = [track("Video Played", {"n": n}) for n in range(250)]
    sizes = [
        len(orjson.loads(r.body)["data"]) for r in render(destination, settings(batch_size="100"), events)
    ]
    assert sizes == [100, 100, 50]


# -- classification ----------------------------------------------------------------------------


def batch_request(times: list[int]) -> Request:
    """A request as ours are, holding events with these event times."""
    data = [{"event_name": "Lead", "event_time": seconds} for seconds in times]
    return Request.json(URL, {"data": data}, dict(HEADERS[1:]))


def classify(status: int, body: Any, headers: dict[str, str] | None = None, count: int = 2):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    request = batch_request([EVENT_TIME] * count)
    return destination.classify(Response(status, headers or {}, raw), request, count)


def graph_error(
    code: int, subcode: int | None = None, message: str = "Invalid parameter", **extra: Any
) -> dict:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbC", **extra}
    if subcode:
        error["error_subcode"] = subcode
    return {"error": error}


def test_success_is_delivered():
    outcome = classify(200, {"events_received": 2, "messages": [], "fbtrace_id": "AbC"})
    assert (outcome.verdict, outcome.reason) == (Verdict.DELIVERED, "HTTP 200: 2 events received")


@pytest.mark.parametrize(
    ("code", "subcode", "message"),
    [
        (100, 2804019, "Invalid parameter"),
        (190, 460, "Error validating access token: the session has been invalidated"),
        (803, None, "Some of the aliases you requested do not exist"),
    ],
)
def test_graph_errors_give_up_with_metas_words(code, subcode, message):
    outcome = classify(400, graph_error(code, subcode, message, error_user_msg=None))
    assert outcome.verdict is Verdict.GIVE_UP
    assert outcome.reason.startswith(f"HTTP 400: Meta error {code}") and message in outcome.reason


def test_the_user_message_is_preferred_to_the_generic_one():
    outcome = classify(400, graph_error(100, 2804050, error_user_msg="The parameter currency is missing"))
    assert outcome.reason == "HTTP 400: Meta error 100/2804050: The parameter currency is missing"


@pytest.mark.parametrize("code", [1, 2, 341, 368, 5000])
def test_temporary_graph_errors_are_retried(code):
    assert classify(400, graph_error(code)).verdict is Verdict.RETRY
    assert classify(400, graph_error(100, is_transient=True)).verdict is Verdict.RETRY


def test_throttling_waits_as_long_as_the_business_use_case_header_says():
    usage = {"1234": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 5}]}
    headers = {"x-business-use-case-usage": orjson.dumps(usage).decode()}
    outcome = classify(400, graph_error(17, message="User request limit reached"), headers)
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 300.0)
    outcome = classify(
        429, graph_error(4, message="Application request limit reached"), {"retry-after": "30"}
    )
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 30.0)
    assert classify(429, b"Too Many Requests", {"retry-after": "7"}).retry_after == 7.0


def test_5xx_is_retried():
    assert classify(503, b"<html>unavailable</html>").verdict is Verdict.RETRY
    assert classify(500, graph_error(1, message="An unknown error occurred")).verdict is Verdict.RETRY


def test_an_event_that_aged_out_while_retried_gives_up_alone():
    now = int(time.time())
    request = batch_request([now - 60, now - 8 * 86400, now - 3600])
    body = graph_error(100, 2804003, error_user_msg="The timestamp for this event is too far in the past.")
    outcomes = destination.classify(Response(400, {}, orjson.dumps(body)), request, 3)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.RETRY, Verdict.GIVE_UP, Verdict.RETRY]
    assert "older than 7 days" in outcomes[1].reason
    fresh = batch_request([now - 60, now - 120])
    outcomes = destination.classify(Response(400, {}, orjson.dumps(body)), fresh, 2)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.GIVE_UP] * 2  # none identified: all give up


# -- settings ----------------------------------------------------------------------------------


def test_a_missing_token_or_pixel_is_named():
    with pytest.raises(SettingsError, match="'access_token'"):
        parse_settings(MetaConversionsSettings, {"pixel_id": PIXEL_ID})
    with pytest.raises(SettingsError, match="'pixel_id'"):
        parse_settings(MetaConversionsSettings, {"access_token": TOKEN})


def test_the_token_is_secret_and_action_sources_are_choices():
    schema = {spec.name: spec for spec in settings_schema(MetaConversionsSettings)}
    assert schema["access_token"].secret and schema["access_token"].required
    assert not schema["pixel_id"].secret
    assert "app" not in schema["action_source"].choices and "website" in schema["action_source"].choices


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"pixel_id": "../me"}, "pixel_id"),
        ({"api_version": "24"}, "api_version"),
        ({"batch_size": "1001"}, "batch_size"),
        ({"batch_size": "0"}, "batch_size"),
        ({"phone_country_code": "one"}, "phone_country_code"),
    ],
)
def test_invalid_settings_are_named(raw, named):
    with pytest.raises(SettingsError, match=named):
        settings(**raw)


# -- the contract, played by a fake Graph API --------------------------------------------------

HASHED_KEYS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
CLEAR_KEYS = ("client_ip_address", "client_user_agent", "fbc", "fbp")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PATH = re.compile(r"^/v\d+\.\d+/(\d+)/events$")


def _graph(status: int, code: int, message: str, subcode: int | None = None) -> tuple[int, dict]:
    return status, graph_error(code, subcode, message)


class GraphEvents:
    """`POST /{version}/{pixel}/events` as Meta documents it: a valid token (Bearer or
    access_token), at most 1,000 events, integer event_time in seconds no older than 7 days
    (2804003 otherwise, failing the whole request), a valid action_source, website events
    with a user agent and a URL, every match key a lower-case SHA-256, the clear keys not
    hashed, currency and value on purchases. `refusals` keeps every error answer."""

    def __init__(self, token: str = TOKEN, pixel: str = PIXEL_ID) -> None:
        self.token, self.pixel = token, pixel
        self.accepted: list[dict[str, Any]] = []
        self.refusals: list[tuple[int, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        status, answer = self.answer(request)
        with self.lock:
            if status != 200:
                self.refusals.append((status, answer))
        return ok_json(answer, status)

    def answer(self, request: Captured) -> tuple[int, dict]:
        match = _PATH.match(request.path)
        if request.method != "POST" or match is None:
            return _graph(400, 100, "Unsupported post request.")
        token = (request.headers.get("authorization") or "").removeprefix("Bearer ")
        token = token or request.query.get("access_token", [""])[0]
        if token != self.token:
            return _graph(400, 190, "Invalid OAuth access token - Cannot parse access token")
        if match.group(1) != self.pixel:
            return _graph(
                400, 100, f"Unsupported post request. Object with ID '{match.group(1)}' does not exist"
            )
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return _graph(400, 100, "Invalid parameter: the body is not JSON")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not data:
            return _graph(400, 100, "The parameter data is required")
        if len(data) > 1000:
            return _graph(400, 100, "Invalid parameter: at most 1000 events per request")
        for event in data:
            problem = self.problem(event)
            if problem:
                return _graph(400, 100, problem[0], problem[1])
        with self.lock:
            self.accepted.extend(data)
        return 200, {"events_received": len(data), "messages": [], "fbtrace_id": "AbC"}

    def problem(self, event: Any) -> tuple[str, int | None] | None:
        if not isinstance(event, dict) or not isinstance(event.get("event_name"), str):
            return "The parameter event_name is required", None
        seconds = event.get("event_time")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds > time.time() + 3600:
            return "Invalid parameter: event_time must be unix seconds, not in the future", None
        if time.time() - seconds > 7 * 86400:
            return "The timestamp for this event is too far in the past.", 2804003
        source = event.get("action_source")
        if source not in (*("website", "email", "app", "phone_call", "chat", "physical_store"),
                          "system_generated", "business_messaging", "other"):  # fmt: skip
            return "Invalid parameter: action_source", None
        user = event.get("user_data")
        if not isinstance(user, dict) or not set(user) & {*HASHED_KEYS, *CLEAR_KEYS}:
            return "The parameter user_data is required", None
        if source == "website" and not (user.get("client_user_agent") and event.get("event_source_url")):
            return "Website events need client_user_agent and event_source_url", None
        for key in HASHED_KEYS:
            values = user.get(key, [])
            if any(
                not _HEX64.match(str(value)) for value in (values if isinstance(values, list) else [values])
            ):
                return f"Invalid parameter: {key} must be hashed with SHA-256", None
        if any(_HEX64.match(str(user[key])) for key in CLEAR_KEYS if key in user):
            return (
                "Invalid parameter: client_ip_address, client_user_agent, fbc and fbp must not be hashed",
                None,
            )
        custom = event.get("custom_data") or {}
        if event["event_name"] == "Purchase" and not (custom.get("currency") and "value" in custom):
            return "The parameters currency and value are required for Purchase", None
        return None


def send(request: Request) -> httpx.Response:
    return httpx.post(request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = GraphEvents()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url)
        events = [recent(event) for event in spec_events.scenario() if event["type"] in ("track", "page")]
        for request in render(destination, config, events):
            reply = send(request)
            assert reply.status_code == 200, reply.text
            outcome = destination.classify(Response(200, dict(reply.headers), reply.content), request, 7)
            assert outcome.verdict is Verdict.DELIVERED
    assert contract.refusals == []
    assert [event["event_name"] for event in contract.accepted] == [
        "ViewContent",
        "AddToCart",
        "InitiateCheckout",
        "Purchase",
        "Search",
        "Signed Up",
        "PageView",
    ]


def test_the_fake_refuses_what_meta_refuses():
    contract = GraphEvents()
    with FakeVendor(contract) as vendor:
        good = only_request(recent(spec_events.order_completed()), settings(base_url=vendor.url))
        event = orjson.loads(good.body)["data"][0]

        def post(data: list[dict], token: str = TOKEN) -> dict:
            headers = {"Authorization": f"Bearer {token}"}
            return send(Request.json(good.url, {"data": data}, headers)).json()["error"]

        assert post([event], token="wrong")["code"] == 190
        assert "at most 1000" in post([event] * 1001)["message"]
        assert "unix seconds" in post([{**event, "event_time": EVENT_TIME * 1000}])["message"]
        assert post([{**event, "event_time": EVENT_TIME - 8 * 86400}])["error_subcode"] == 2804003
        unhashed = {**event, "user_data": {**event["user_data"], "em": "peter@example.com"}}
        assert "em must be hashed" in post([unhashed])["message"]
        hashed_ip = {
            **event,
            "user_data": {**event["user_data"], "client_ip_address": hashing.sha256_hex("ip")},
        }
        assert "must not be hashed" in post([hashed_ip])["message"]
        no_currency = {**event, "custom_data": {"value": 25}}
        assert "currency and value" in post([no_currency])["message"]
    assert len(contract.refusals) == 7 and contract.accepted == []
