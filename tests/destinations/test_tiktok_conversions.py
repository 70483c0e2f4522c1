"""TikTok Events API 2.0: exact requests for the Spec events and appendix A.8, hashed user
fields, batching, classification of TikTok's `code` answers, settings, and the Spec
scenario against a fake that checks TikTok's documented contract.

No differential test: TikTok's Python SDK (`tiktok-business-api-sdk`) wrapped only the
legacy `/pixel/` endpoints when `/event/track/` was asked of it (its issue #54), so it is
no oracle for the Events API 2.0 request (destinations-marketing.md §0.3).
"""

from __future__ import annotations

import copy
import re
import threading
import time
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
from trackyard.destinations.tiktok_conversions import TikTokConversionsSettings, destination

TOKEN = "4f1c0a9e7b-tiktok-access-token"
PIXEL = "C4A1B2C3D4E5F6G7H8I9"
SETTINGS = parse_settings(TikTokConversionsSettings, {"access_token": TOKEN, "pixel_code": PIXEL})
URL = "https://business-api.tiktok.com/open_api/v1.3/event/track/"
HEADERS = (("Content-Type", "application/json"), ("Access-Token", TOKEN))
EVENT_TIME = 1795860005  # the Spec events' timestamp, 2026-11-28T10:00:05.180Z
USER_AGENT = spec_events.CONTEXT["userAgent"]
SPEC_USER = {
    "external_id": [hashing.sha256_hex("97980cfea0067")],
    "email": [hashing.sha256_hex("peter@example.com")],
    "ip": "203.0.113.7",
    "user_agent": USER_AGENT,
    "locale": "en-US",
}
CHECKOUT_PAGE = {
    "url": "https://shop.example/checkout?utm_source=newsletter",
    "referrer": "https://www.google.com/",
}
MONOPOLY = {
    "price": 18.99,
    "quantity": 1,
    "content_category": "Games",
    "content_id": "507f1f77",
    "content_name": "Monopoly: 3rd Edition",
    "brand": "Hasbro",
}
UNO = {
    "price": 3.0,
    "quantity": 2,
    "content_category": "Games",
    "content_id": "505bd76",
    "content_name": "Uno Card Game",
    "brand": "Mattel",
}


def settings(**overrides: str) -> TikTokConversionsSettings:
    return parse_settings(
        TikTokConversionsSettings, {"access_token": TOKEN, "pixel_code": PIXEL, **overrides}
    )


def only_request(event: dict[str, Any], config: TikTokConversionsSettings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def tiktok_event(event: dict[str, Any], config: TikTokConversionsSettings = SETTINGS) -> dict[str, Any]:
    [body] = orjson.loads(only_request(event, config).body)["data"]
    return body


def expected(event: dict[str, Any], name: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": name,
        "event_time": EVENT_TIME,
        "event_id": event["messageId"],
        "user": SPEC_USER,
        "page": CHECKOUT_PAGE,
        "limited_data_use": False,
        **fields,
    }


def track(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return spec_events.track(name, properties, f"m-{name}")


# -- the Spec events ---------------------------------------------------------------------------


def test_catalog_knows_it_by_segments_name():
    entry = registry.get("tiktok_conversions").catalog_entry()
    assert (entry["name"], entry["category"]) == ("TikTok Conversions", "advertising")


def test_order_completed_is_complete_payment_posted_with_the_access_token():
    event = spec_events.order_completed()
    request = only_request(event)
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    assert orjson.loads(request.body) == {
        "event_source": "web",
        "event_source_id": PIXEL,
        "data": [
            expected(
                event,
                "CompletePayment",
                properties={
                    "contents": [MONOPOLY, UNO],
                    "currency": "USD",
                    "value": 25.0,
                    "order_id": "50314b8e9bcf000000000000",
                },
            )
        ],
    }


@pytest.mark.parametrize(
    ("make", "name", "properties"),
    [
        (
            spec_events.product_viewed,
            "ViewContent",
            {"contents": [MONOPOLY], "currency": "USD", "value": 18.99},
        ),
        (spec_events.product_added, "AddToCart", {"contents": [MONOPOLY]}),
        (
            spec_events.checkout_started,
            "InitiateCheckout",
            {
                "contents": [MONOPOLY, UNO],
                "currency": "USD",
                "value": 30,
                "order_id": "50314b8e9bcf000000000000",
            },
        ),
        (spec_events.products_searched, "Search", {"query": "blue roses"}),
        (spec_events.signed_up, "CompleteRegistration", None),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_each_ecommerce_event_becomes_its_tiktok_event(make, name, properties):
    event = make()
    request = only_request(event)
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    fields = {"properties": properties} if properties else {}
    assert orjson.loads(request.body)["data"] == [expected(event, name, **fields)]


def test_page_is_a_page_view_of_its_own_url():
    event = spec_events.page()
    assert tiktok_event(event) == expected(
        event, "PageView", page={"url": "https://shop.example/pricing", "referrer": "https://www.google.com/"}
    )


@pytest.mark.parametrize(
    "make", [spec_events.identify, spec_events.group, spec_events.screen, spec_events.alias]
)
def test_calls_tiktok_has_no_event_for_are_skipped(make):
    with pytest.raises(Skip, match="does not take"):
        destination.translate(make(), SETTINGS)


@pytest.mark.parametrize(
    ("segment", "tiktok"),
    [
        ("Product Clicked", "ClickButton"),
        ("Product Added to Wishlist", "AddToWishlist"),
        ("Payment Info Entered", "AddPaymentInfo"),
        ("Order Placed", "PlaceAnOrder"),
        ("Subscription Created", "Subscribe"),
        ("Form Submitted", "SubmitForm"),
        ("Callback Started", "Contact"),
        ("Download Link Clicked", "Download"),
        ("Video Played", "Video Played"),
    ],
)
def test_segments_presets_name_the_other_events(segment, tiktok):
    assert tiktok_event(track(segment, {}))["event"] == tiktok


def test_single_product_events_describe_their_own_product():
    event = track(
        "Product Clicked", {"sku": "S-1", "name": "Mug", "price": "n/a", "currency": "eur", "value": 4}
    )
    assert tiktok_event(event)["properties"] == {
        "contents": [{"content_id": "S-1", "content_name": "Mug"}],
        "currency": "EUR",
        "value": 4,
    }


# -- appendix A.8 ------------------------------------------------------------------------------

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


def test_appendix_a8_worked_translation():
    """A.8 as written, with its documented changes: no partner_name (we are not a TikTok
    partner), and first_name, last_name and zip_code hashed from the camelCase traits
    Segment's snake_case defaults miss."""
    assert orjson.loads(only_request(copy.deepcopy(INPUT_T)).body) == {
        "event_source": "web",
        "event_source_id": PIXEL,
        "data": [
            {
                "event": "CompletePayment",
                "event_time": 1714564800,
                "event_id": "m-1",
                "user": {
                    "external_id": ["06c0a1fbb20ef07684b202620d0ab29ee0c6cb427998991ce57b5ceee2584b78"],
                    "email": ["86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"],
                    "phone": ["8a59780bb8cd2ba022bfa5ba2ea3b6e07af17a7d8b30c1f9b3390e36f69019e4"],
                    "first_name": hashing.sha256_hex("jane"),
                    "last_name": hashing.sha256_hex("doe"),
                    "zip_code": hashing.sha256_hex("10001"),
                    "city": "newyork",
                    "state": "newyork",
                    "country": "us",
                    "ip": "203.0.113.7",
                    "user_agent": "Mozilla/5.0",
                },
                "properties": {
                    "contents": [
                        {
                            "price": 10,
                            "quantity": 2,
                            "content_category": "kitchen",
                            "content_id": "p1",
                            "content_name": "Mug",
                        },
                        {"price": 5, "quantity": 1, "content_id": "p2", "content_name": "Tee"},
                    ],
                    "currency": "USD",
                    "value": 25,
                    "order_id": "o-9",
                },
                "page": {"url": "https://shop.example/checkout"},
                "limited_data_use": False,
            }
        ],
    }


# -- user fields -------------------------------------------------------------------------------


def test_phone_is_hashed_in_e164_with_the_default_country_code():
    event = track("Lead", {})
    event["context"]["traits"] = {"phone": "(650) 555-1212"}
    assert tiktok_event(event, settings(phone_country_code="1"))["user"]["phone"] == [
        hashing.sha256_hex("+16505551212")
    ]


def test_click_and_cookie_ids_are_sent_in_clear():
    event = track("Lead", {"ttp": "2Xa8cdVlS1Lq3jPQ6mMx"})
    event["context"]["page"]["url"] = "https://shop.example/?ttclid=E.C.P.Cp8B9mX"
    user = tiktok_event(event)["user"]
    assert (user["ttclid"], user["ttp"]) == ("E.C.P.Cp8B9mX", "2Xa8cdVlS1Lq3jPQ6mMx")
    assert tiktok_event(track("Lead", {"ttclid": "explicit"}))["user"]["ttclid"] == "explicit"


def test_anonymous_events_match_on_the_anonymous_id():
    event = track("Lead", {})
    del event["userId"]
    assert tiktok_event(event)["user"]["external_id"] == [hashing.sha256_hex("507f191e810c19729de860ea")]


def test_an_invalid_currency_skips_the_event():
    with pytest.raises(Skip, match="ISO 4217"):
        destination.translate(track("Order Completed", {"currency": "$$"}), SETTINGS)


def test_offline_events_carry_no_page_and_settings_reach_the_body():
    config = settings(event_source="crm", test_event_code="TEST123", limited_data_use="true")
    body = orjson.loads(only_request(spec_events.signed_up(), config).body)
    assert (body["event_source"], body["test_event_code"]) == ("crm", "TEST123")
    assert "page" not in body["data"][0] and body["data"][0]["limited_data_use"] is True


def test_base_url_replaces_the_host():
    request = only_request(spec_events.signed_up(), settings(base_url="http://127.0.0.1:9/tt/"))
    assert request.url == "http://127.0.0.1:9/tt/open_api/v1.3/event/track/"


# -- batching ----------------------------------------------------------------------------------


def test_2500_events_are_cut_at_1000_per_request_in_order():
    events = [track("Video Played", {"value": n}) for n in range(2500)]
    bodies = [orjson.loads(request.body)["data"] for request in render(destination, SETTINGS, events)]
    assert [len(body) for body in bodies] == [1000, 1000, 500]
    assert [event["properties"]["value"] for body in bodies for event in body] == list(range(2500))


def test_the_batch_size_setting_lowers_the_limit():
    events = [track("Video Played", {}) for _ in range(120)]
    sizes = [
        len(orjson.loads(r.body)["data"]) for r in render(destination, settings(batch_size="50"), events)
    ]
    assert sizes == [50, 50, 20]


# -- classification ----------------------------------------------------------------------------


def classify(status: int, body: Any, headers: dict[str, str] | None = None, count: int = 3):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    request = render(destination, SETTINGS, [track("Video Played", {}) for _ in range(count)])[0]
    return destination.classify(Response(status, headers or {}, raw), request, count)


def answer(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": "2026112810000501", "data": {}}


def test_code_zero_is_delivered():
    assert classify(200, answer(0, "OK")).verdict is Verdict.DELIVERED


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (40002, "Invalid value for event_id: not a valid string."),
        (40001, "No permission to operate pixel C4A1B2C3D4E5F6G7H8I9"),
        (40105, "Access token is incorrect or has been revoked."),
    ],
)
def test_a_refused_batch_gives_up_every_event_with_tiktoks_words(code, message):
    """A failure inside an HTTP 200: TikTok answers for the request as a whole, naming no
    event, so the whole batch gets the verdict, with TikTok's message and request id."""
    outcome = classify(200, answer(code, message))
    assert outcome.verdict is Verdict.GIVE_UP
    assert outcome.reason == f"TikTok code {code}: {message} (request_id 2026112810000501)"


def test_the_rate_limit_code_waits_for_the_reset_header():
    outcome = classify(200, answer(40100, "Too many requests."), {"x-ratelimit-reset": "12"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 12.0)
    outcome = classify(429, b"Too Many Requests", {"retry-after": "5"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 5.0)


def test_system_errors_and_5xx_are_retried():
    assert classify(200, answer(50002, "Internal service error")).verdict is Verdict.RETRY
    assert classify(503, b"<html>busy</html>").verdict is Verdict.RETRY
    assert classify(404, b"not found").verdict is Verdict.GIVE_UP


# -- settings ----------------------------------------------------------------------------------


def test_missing_credentials_are_named():
    with pytest.raises(SettingsError, match="'access_token'"):
        parse_settings(TikTokConversionsSettings, {"pixel_code": PIXEL})
    with pytest.raises(SettingsError, match="'pixel_code'"):
        parse_settings(TikTokConversionsSettings, {"access_token": TOKEN})


def test_the_token_is_secret_and_event_sources_are_choices():
    schema = {spec.name: spec for spec in settings_schema(TikTokConversionsSettings)}
    assert schema["access_token"].secret and schema["access_token"].required
    assert schema["event_source"].choices == ("web", "offline", "crm")


@pytest.mark.parametrize(
    ("raw", "named"),
    [({"batch_size": "1001"}, "batch_size"), ({"phone_country_code": "+1234"}, "phone_country_code")],
)
def test_invalid_settings_are_named(raw, named):
    with pytest.raises(SettingsError, match=named):
        settings(**raw)


# -- the contract, played by a fake Events API -------------------------------------------------

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CLEAR_LOCATION = re.compile(r"^[0-9a-z]+$")


class EventTrack:
    """`POST /open_api/v1.3/event/track/` as TikTok documents it. Every answer is HTTP 200
    with a `code`: 40105 for a wrong Access-Token, 40002 for a bad parameter (an unknown
    source or pixel, more than 1,000 events, event_time not in seconds, identifiers not
    SHA-256, city/state/country hashed or not lower-case alphanumerics, a currency that is
    not ISO 4217). `refusals` keeps every non-zero answer."""

    def __init__(self, token: str = TOKEN, pixel: str = PIXEL) -> None:
        self.token, self.pixel = token, pixel
        self.accepted: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        code, message = self.answer(request)
        body = answer(code, message)
        with self.lock:
            if code:
                self.refusals.append(body)
        return ok_json(body)

    def answer(self, request: Captured) -> tuple[int, str]:
        if request.method != "POST" or request.path != "/open_api/v1.3/event/track/":
            return 40002, f"Unsupported path {request.path}"
        if request.headers.get("access-token") != self.token:
            return 40105, "Access token is incorrect or has been revoked."
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return 40002, "The request body is not JSON."
        if body.get("event_source") not in ("web", "app", "offline", "crm"):
            return 40002, "Invalid value for event_source."
        if body.get("event_source_id") != self.pixel:
            return 40001, f"No permission to operate pixel {body.get('event_source_id')}"
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= 1000:
            return 40002, "data must hold 1 to 1000 events."
        for event in data:
            problem = self.problem(event, body["event_source"])
            if problem:
                return 40002, problem
        with self.lock:
            self.accepted.extend(data)
        return 0, "OK"

    @staticmethod
    def problem(event: Any, source: str) -> str | None:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str) or not event["event"]:
            return "Invalid value for event."
        seconds = event.get("event_time")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds > time.time() + 86400:
            return "Invalid value for event_time: unix seconds expected."
        if "event_id" in event and not isinstance(event["event_id"], str):
            return "Invalid value for event_id: not a valid string."
        user = event.get("user")
        if not isinstance(user, dict) or not user:
            return "Invalid value for user."
        for key in ("email", "phone", "external_id"):
            if not all(_HEX64.match(str(value)) for value in user.get(key, [])):
                return f"Invalid value for user.{key}: SHA-256 expected."
        for key in ("first_name", "last_name", "zip_code"):
            if key in user and not _HEX64.match(str(user[key])):
                return f"Invalid value for user.{key}: SHA-256 expected."
        for key in ("city", "state", "country"):
            if key in user and (_HEX64.match(user[key]) or not _CLEAR_LOCATION.match(user[key])):
                return f"Invalid value for user.{key}: lower-case letters and digits, unhashed."
        properties = event.get("properties", {})
        currency = properties.get("currency")
        if currency is not None and not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
            return "Invalid value for properties.currency."
        if source == "web" and "page" in event and not isinstance(event["page"].get("url"), str):
            return "Invalid value for page.url."
        return None


def send(request: Request) -> httpx.Response:
    return httpx.post(request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = EventTrack()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url)
        events = [event for event in spec_events.scenario() if event["type"] in ("track", "page")]
        for request in render(destination, config, events):
            reply = send(request)
            outcome = destination.classify(Response(reply.status_code, {}, reply.content), request, 7)
            assert outcome.verdict is Verdict.DELIVERED, reply.text
    assert contract.refusals == []
    assert [event["event"] for event in contract.accepted] == [
        "ViewContent",
        "AddToCart",
        "InitiateCheckout",
        "CompletePayment",
        "Search",
        "CompleteRegistration",
        "PageView",
    ]


def test_the_fake_refuses_what_tiktok_refuses():
    contract = EventTrack()
    with FakeVendor(contract) as vendor:
        good = only_request(spec_events.order_completed(), settings(base_url=vendor.url))
        body = orjson.loads(good.body)
        event = body["data"][0]

        def post(data: list[dict], token: str = TOKEN, **envelope: str) -> dict:
            request = Request.json(good.url, {**body, **envelope, "data": data}, {"Access-Token": token})
            return send(request).json()

        assert post([event], token="wrong")["code"] == 40105
        assert post([event], event_source_id="C-OTHER")["code"] == 40001
        assert post([event] * 1001)["message"] == "data must hold 1 to 1000 events."
        assert "unix seconds" in post([{**event, "event_time": EVENT_TIME * 1000}])["message"]
        clear_email = {**event, "user": {**event["user"], "email": ["peter@example.com"]}}
        assert "user.email" in post([clear_email])["message"]
        hashed_city = {**event, "user": {**event["user"], "city": hashing.sha256_hex("sanfrancisco")}}
        assert "user.city" in post([hashed_city])["message"]
    assert len(contract.refusals) == 6 and contract.accepted == []
