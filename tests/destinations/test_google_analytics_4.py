"""Google Analytics 4 Cloud: exact Measurement Protocol requests, batching, classification, settings,
and the whole Spec scenario against a fake that checks Google's documented contract.

No differential test: Google publishes no Python SDK for the Measurement Protocol
(destinations-analytics.md §3.5; `ga4mp` is unofficial). Google's validation server
(`/debug/mp/collect`) is the reference instead, and `MeasurementProtocol` below plays it.
"""

from __future__ import annotations

import re
import threading
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
from trackyard.destinations.google_analytics_4 import GoogleAnalytics4Settings, destination

MEASUREMENT_ID = "G-TEST123"
API_SECRET = "s3cr3t-Value"
SETTINGS = parse_settings(
    GoogleAnalytics4Settings, {"measurement_id": MEASUREMENT_ID, "api_secret": API_SECRET}
)
URL = f"https://www.google-analytics.com/mp/collect?measurement_id={MEASUREMENT_ID}&api_secret={API_SECRET}"
SPEC_MICROS = 1_795_860_005_180_000  # the Spec events' timestamp, 2026-11-28T10:00:05.180Z, in µs
ANONYMOUS_ID = "507f191e810c19729de860ea"
USER_ID = "97980cfea0067"

MONOPOLY = {
    "item_id": "507f1f77",
    "item_name": "Monopoly: 3rd Edition",
    "coupon": "MAYDEALS",
    "item_brand": "Hasbro",
    "item_category": "Games",
    "item_variant": "200 pieces",
    "price": 18.99,
    "quantity": 1,
}
UNO = {
    "item_id": "505bd76",
    "item_name": "Uno Card Game",
    "item_brand": "Mattel",
    "item_category": "Games",
    "price": 3.0,
    "quantity": 2,
}


def taken(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events GA4 takes (alias is not one of them)."""
    return [event for event in events if event["type"] != "alias"]


def settings(**overrides: str) -> GoogleAnalytics4Settings:
    return parse_settings(
        GoogleAnalytics4Settings, {"measurement_id": MEASUREMENT_ID, "api_secret": API_SECRET, **overrides}
    )


def only_request(event: dict[str, Any], config: GoogleAnalytics4Settings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def body_of(event: dict[str, Any], config: GoogleAnalytics4Settings = SETTINGS) -> dict[str, Any]:
    return orjson.loads(only_request(event, config).body)


def request_with(name: str, params: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    """The whole request body GA4 should get for one Spec user's event."""
    return {
        "client_id": ANONYMOUS_ID,
        "user_id": USER_ID,
        **envelope,
        "events": [
            {"name": name, "params": {"engagement_time_msec": 1, **params}, "timestamp_micros": SPEC_MICROS}
        ],
    }


def track(event_name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return spec_events.track(event_name, properties, f"m-{event_name}")


# -- the request ----------------------------------------------------------------------------


def test_a_request_is_a_json_post_to_mp_collect_with_id_and_secret_in_the_query():
    request = only_request(spec_events.page())
    assert request.method == "POST"
    assert request.url == URL
    assert request.headers == (("Content-Type", "application/json"),)


def test_page_becomes_page_view_from_the_pages_own_properties():
    assert body_of(spec_events.page()) == request_with(
        "page_view",
        {
            "page_location": "https://shop.example/pricing",
            "page_referrer": "https://www.google.com/",
            "page_title": "Pricing · Shop",
        },
    )


def test_page_without_url_or_title_properties_falls_back_to_context_page():
    event = spec_events.page()
    event["properties"] = {"name": "Checkout"}
    assert body_of(event)["events"][0]["params"] == {
        "engagement_time_msec": 1,
        "page_location": "https://shop.example/checkout?utm_source=newsletter",
        "page_referrer": "https://www.google.com/",
        "page_title": "Checkout",
    }


def test_page_location_keeps_up_to_1000_characters_other_strings_100():
    event = spec_events.page()
    event["properties"]["url"] = "https://shop.example/" + "a" * 2000
    event["properties"]["title"] = "t" * 400
    params = body_of(event)["events"][0]["params"]
    assert len(params["page_location"]) == 1000
    assert len(params["page_title"]) == 300


@pytest.mark.parametrize(
    ("make", "name", "params"),
    [
        (
            spec_events.product_viewed,
            "view_item",
            {"value": 18.99, "currency": "USD", "items": [MONOPOLY]},
        ),
        (
            spec_events.product_added,
            "add_to_cart",
            {"value": 18.99, "currency": "USD", "items": [MONOPOLY]},  # value = price × quantity
        ),
        (
            spec_events.checkout_started,
            "begin_checkout",
            {"coupon": "hasbros", "value": 30, "currency": "USD", "items": [{**MONOPOLY, "index": 3}, UNO]},
        ),
        (
            spec_events.order_completed,
            "purchase",
            {
                "transaction_id": "50314b8e9bcf000000000000",
                "affiliation": "Google Store",
                "coupon": "hasbros",
                "value": 27.5,
                "currency": "USD",
                "tax": 2,
                "shipping": 3,
                "items": [{**MONOPOLY, "index": 3}, UNO],
            },
        ),
        (spec_events.products_searched, "search", {"search_term": "blue roses"}),
        (spec_events.signed_up, "sign_up", {}),
    ],
    ids=[
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Products Searched",
        "Signed Up",
    ],
)
def test_spec_ecommerce_events_become_ga4_recommended_events(make, name, params):
    assert body_of(make()) == request_with(name, params)


LIST_PRODUCTS = [
    {"product_id": "p1", "name": "Mug", "price": 10, "quantity": 2, "position": 1},
    {"sku": "SKU-2", "name": "Tee", "price": "5.5"},
    {"brand": "no id, no name: GA4 drops such an item"},
]
LIST_ITEMS = [
    {"item_id": "p1", "item_name": "Mug", "price": 10, "quantity": 2, "index": 1},
    {"item_id": "SKU-2", "item_name": "Tee", "price": 5.5},
]
SINGLE = {"product_id": "p1", "name": "Mug", "price": 10, "quantity": 2, "currency": "eur", "position": 4}
SINGLE_ITEM = {"item_id": "p1", "item_name": "Mug", "price": 10, "quantity": 2}


@pytest.mark.parametrize(
    ("segment_name", "properties", "name", "params"),
    [
        (
            "Product List Viewed",
            {"list_id": "hot", "category": "Deals", "products": LIST_PRODUCTS},
            "view_item_list",
            {"item_list_id": "hot", "item_list_name": "Deals", "items": LIST_ITEMS},
        ),
        ("Product Clicked", SINGLE, "select_item", {"items": [SINGLE_ITEM]}),
        (
            "Product Removed",
            SINGLE,
            "remove_from_cart",
            {"value": 20, "currency": "EUR", "items": [SINGLE_ITEM]},
        ),
        (
            "Product Added to Wishlist",
            {**SINGLE, "value": 9},
            "add_to_wishlist",
            {"value": 9, "currency": "EUR", "items": [SINGLE_ITEM]},
        ),
        (
            "Cart Viewed",
            {"cart_id": "c1", "products": LIST_PRODUCTS},
            "view_cart",
            {"items": LIST_ITEMS},
        ),
        (
            "Payment Info Entered",
            {
                "payment_method": "Visa",
                "coupon": "C10",
                "value": 31,
                "currency": "GBP",
                "products": LIST_PRODUCTS,
            },
            "add_payment_info",
            {"payment_type": "Visa", "coupon": "C10", "value": 31, "currency": "GBP", "items": LIST_ITEMS},
        ),
        (
            "Order Refunded",
            {"order_id": "o-9", "total": 30, "products": LIST_PRODUCTS[:1]},
            "refund",
            {"transaction_id": "o-9", "value": 30, "currency": "USD", "items": LIST_ITEMS[:1]},
        ),
        (
            "Promotion Viewed",
            {
                "promotion_id": "promo_1",
                "creative": "top_banner",
                "name": "75% store-wide",
                "position": "home",
            },
            "view_promotion",
            {
                "creative_slot": "top_banner",
                "promotion_id": "promo_1",
                "promotion_name": "75% store-wide",
                "location_id": "home",
            },
        ),
        (
            "Promotion Clicked",
            {
                "promotion_id": "promo_1",
                "creative": "top_banner",
                "name": "75% store-wide",
                "position": "home",
            },
            "select_promotion",
            {"creative_slot": "top_banner", "promotion_id": "promo_1", "promotion_name": "75% store-wide"},
        ),
        ("Signed Up", {"type": "google"}, "sign_up", {"method": "google"}),
        ("Signed In", {"method": "password"}, "login", {"method": "password"}),
    ],
)
def test_every_mapped_segment_event_has_its_recommended_name_and_typed_params(
    segment_name, properties, name, params
):
    assert body_of(track(segment_name, properties)) == request_with(name, params)


def test_a_custom_event_sends_its_flat_properties_as_valid_params():
    properties = {
        "videoId": "v-1",
        "durationSeconds": 12.5,
        "autoplay": True,
        "playlist position": 3,
        "title": "x" * 150,
        "tags": ["a", "b"],  # lists and objects are dropped
        "meta": {"k": "v"},
        "nothing": None,
        "ga_internal": 1,  # reserved prefix
        "_private": "p",  # leading underscore stripped
        "video_id": "clash: the first one wins",
    }
    assert body_of(track("Video Played", properties)) == request_with(
        "Video_Played",
        {
            "video_id": "v-1",
            "duration_seconds": 12.5,
            "autoplay": "true",
            "playlist_position": 3,
            "title": "x" * 100,
            "private": "p",
        },
    )


def test_a_custom_event_keeps_at_most_25_params_counting_engagement_time():
    params = body_of(track("Many", {f"p{i}": i for i in range(40)}))["events"][0]["params"]
    assert len(params) == 25
    assert params["engagement_time_msec"] == 1
    assert params["p23"] == 23 and "p24" not in params


@pytest.mark.parametrize(
    ("segment_name", "ga4_name"),
    [
        ("Video Played", "Video_Played"),
        ("Home | Profile", "Home_Profile"),
        ("  signup-step 2 ", "signup_step_2"),
        ("2fa enabled", "fa_enabled"),
        ("error", "custom_error"),
        ("Click", "custom_Click"),
        ("google_thing", "custom_google_thing"),
        ("page_view", "page_view"),
        ("A" * 60, "A" * 40),
    ],
)
def test_custom_event_names_are_made_valid(segment_name, ga4_name):
    assert body_of(track(segment_name, {}))["events"][0]["name"] == ga4_name


def test_custom_event_names_can_be_lower_cased():
    event = track("Video Played", {})
    assert body_of(event, settings(lowercase_event_names="true"))["events"][0]["name"] == "video_played"


def test_an_event_name_without_letters_is_skipped():
    with pytest.raises(Skip, match="no letter"):
        destination.translate(track("|| 42 ||", {}), SETTINGS)


def test_identify_sends_traits_without_personal_data_as_user_properties_on_an_identify_event():
    assert body_of(spec_events.identify()) == request_with(
        "identify",
        {},
        user_properties={
            "plan": {"value": "premium", "timestamp_micros": SPEC_MICROS},
            "logins": {"value": 5, "timestamp_micros": SPEC_MICROS},
            "created_at": {"value": "2026-01-15T09:30:00.000Z", "timestamp_micros": SPEC_MICROS},
        },
    )


def test_user_properties_respect_ga4_names_and_lengths():
    event = spec_events.identify()
    event["traits"] = {
        "favouriteColourOfTheMonthAndYear": "blue",  # name cut to 24 characters
        "bio": "b" * 50,  # value cut to 36 characters
        "first_open_time": 1,  # reserved
        "google_id": "g",  # reserved prefix
        "user_id": "u",  # reserved
        "E-mail": "peter@example.com",  # personal data, whatever its spelling
        "workPhoneNumber": "+1 555",
    }
    assert body_of(event)["user_properties"] == {
        "favourite_colour_of_the": {"value": "blue", "timestamp_micros": SPEC_MICROS},
        "bio": {"value": "b" * 36, "timestamp_micros": SPEC_MICROS},
    }


def test_identify_with_only_personal_traits_is_skipped():
    event = spec_events.identify()
    event["traits"] = {"email": "peter@example.com", "firstName": "Peter", "address": {"city": "SF"}}
    with pytest.raises(Skip, match="no trait"):
        destination.translate(event, SETTINGS)


def test_identify_is_skipped_when_the_setting_is_off():
    with pytest.raises(Skip, match="send identify"):
        destination.translate(spec_events.identify(), settings(send_identify="false"))


def test_screen_becomes_screen_view_and_group_join_group():
    assert body_of(spec_events.screen()) == request_with("screen_view", {"screen_name": "Home"})
    assert body_of(spec_events.group()) == request_with(
        "join_group", {"group_id": "0e8c78ea9d97a7b8185e8632"}
    )


def test_alias_is_not_taken():
    with pytest.raises(Skip):
        destination.translate(spec_events.alias(), SETTINGS)


# -- identities -----------------------------------------------------------------------------


def test_client_id_comes_from_anonymous_id_by_default_and_from_user_id_when_chosen():
    assert body_of(spec_events.signed_up())["client_id"] == ANONYMOUS_ID
    assert body_of(spec_events.signed_up(), settings(client_id_source="userId"))["client_id"] == USER_ID


def test_client_id_falls_back_to_the_other_id_and_user_id_is_only_sent_when_known():
    server_side = spec_events.signed_up()
    del server_side["anonymousId"]
    assert body_of(server_side)["client_id"] == USER_ID
    anonymous = spec_events.signed_up()
    del anonymous["userId"]
    body = body_of(anonymous, settings(client_id_source="userId"))
    assert body["client_id"] == ANONYMOUS_ID
    assert "user_id" not in body


def test_an_event_without_any_id_is_skipped():
    event = spec_events.signed_up()
    del event["anonymousId"], event["userId"]
    with pytest.raises(Skip, match="client_id"):
        destination.translate(event, SETTINGS)


# -- batching -------------------------------------------------------------------------------


def test_2500_events_of_one_client_are_cut_into_requests_of_25():
    events = [track("Video Played", {"n": i}) for i in range(2500)]
    requests = render(destination, SETTINGS, events)
    assert len(requests) == 100
    bodies = [orjson.loads(request.body) for request in requests]
    assert all(len(body["events"]) == 25 for body in bodies)
    assert [event["params"]["n"] for body in bodies for event in body["events"]] == list(range(2500))
    assert max(len(request.body) for request in requests) < 130_000


def test_events_of_different_clients_or_users_never_share_a_request():
    events = []
    for i in range(30):
        event = track("Video Played", {"n": i})
        event["anonymousId"] = f"device-{i % 3}"
        if i % 2:
            del event["userId"]  # the same device before and after login
        events.append(event)
    requests = render(destination, SETTINGS, events)
    seen = set()
    for request in requests:
        body = orjson.loads(request.body)
        key = (body["client_id"], body.get("user_id"))
        assert key not in seen
        seen.add(key)
        for event in body["events"]:
            n = event["params"]["n"]
            assert (f"device-{n % 3}", None if n % 2 else USER_ID) == key
    assert len(requests) == 6


def test_identify_user_properties_travel_with_the_events_of_their_request_newest_value_winning():
    older, newer = spec_events.identify(), spec_events.identify()
    older["traits"] = {"plan": "free", "seats": 1}
    newer["traits"] = {"plan": "premium"}
    newer["timestamp"] = "2026-11-28T10:00:06.000Z"
    [request] = render(destination, SETTINGS, [newer, spec_events.signed_up(), older])
    body = orjson.loads(request.body)
    assert body["user_properties"] == {
        "plan": {"value": "premium", "timestamp_micros": 1_795_860_006_000_000},
        "seats": {"value": 1, "timestamp_micros": SPEC_MICROS},
    }
    assert [event["name"] for event in body["events"]] == ["identify", "sign_up", "identify"]


def test_timestamps_are_microseconds_of_the_events_own_timestamp():
    event = spec_events.signed_up()
    event["timestamp"] = "2025-01-02T03:04:05.678Z"
    assert body_of(event)["events"][0]["timestamp_micros"] == 1_735_787_045_678_000


# -- classification -------------------------------------------------------------------------


def classify(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    return destination.classify(Response(status, headers or {}, body), only_request(spec_events.page()), 1)


def test_ga4s_204_and_the_validation_servers_200_are_delivered():
    assert classify(204).verdict is Verdict.DELIVERED
    assert classify(200, b'{"validationMessages":[]}').verdict is Verdict.DELIVERED


def test_a_429_is_retried_after_retry_after_and_5xx_are_retried():
    throttled = classify(429, b"quota", {"retry-after": "7"})
    assert (throttled.verdict, throttled.retry_after) == (Verdict.RETRY, 7.0)
    assert classify(503, b"unavailable").verdict is Verdict.RETRY


def test_other_4xx_give_up_with_the_body():
    outcome = classify(400, b"Bad payload: not JSON")
    assert outcome.verdict is Verdict.GIVE_UP
    assert "Bad payload: not JSON" in outcome.reason


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["measurement_id", "api_secret"])
def test_a_missing_credential_is_named(missing):
    raw = {"measurement_id": MEASUREMENT_ID, "api_secret": API_SECRET}
    del raw[missing]
    with pytest.raises(SettingsError, match=f"'{missing}'"):
        parse_settings(GoogleAnalytics4Settings, raw)


def test_a_universal_analytics_id_is_refused_as_measurement_id():
    with pytest.raises(SettingsError, match=r"measurement_id.*G-"):
        settings(measurement_id="UA-12345-1")


def test_the_api_secret_is_secret_and_regions_are_choices():
    schema = {spec.name: spec for spec in settings_schema(GoogleAnalytics4Settings)}
    assert schema["api_secret"].secret and schema["api_secret"].required
    assert not schema["measurement_id"].secret
    assert schema["region"].choices == ("global", "eu")
    assert schema["client_id_source"].choices == ("anonymousId", "userId")


def test_eu_region_and_base_url_change_the_host_only():
    eu = only_request(spec_events.page(), settings(region="eu")).url
    assert eu == URL.replace("www.google-analytics.com", "region1.google-analytics.com")
    proxied = only_request(spec_events.page(), settings(base_url="http://127.0.0.1:9/ga/")).url
    assert proxied == URL.replace("https://www.google-analytics.com", "http://127.0.0.1:9/ga")


def test_the_catalog_knows_it_by_segments_name():
    entry = registry.get("google_analytics_4")
    assert entry.name == "Google Analytics 4 Cloud"
    assert entry.catalog_entry()["category"] == "analytics"


# -- the contract, played by a fake Measurement Protocol -------------------------------------

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
RESERVED_EVENTS = {"ad_impression", "app_remove", "click", "error", "first_visit", "session_start"}
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
BODY_KEYS = {"client_id", "user_id", "timestamp_micros", "user_properties", "consent", "events"}
MICROS_2000, MICROS_2100 = 946_684_800_000_000, 4_102_444_800_000_000


def message(path: str, description: str, code: str) -> dict[str, str]:
    return {"fieldPath": path, "description": description, "validationCode": code}


class MeasurementProtocol:
    """Google's collection (`/mp/collect`: 204 whatever it gets) and validation server
    (`/debug/mp/collect`: 200 with `validationMessages`), checking the documented limits.

    Stricter than Google on one point: the real validation server does not check the
    api_secret, and production drops data with a wrong one silently; this fake reports it.
    Every message of every /mp/collect request is kept in `problems`.
    """

    def __init__(self, measurement_id: str = MEASUREMENT_ID, api_secret: str = API_SECRET) -> None:
        self.measurement_id, self.api_secret = measurement_id, api_secret
        self.problems: list[dict[str, str]] = []
        self.collected: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        if request.method != "POST" or request.path not in ("/mp/collect", "/debug/mp/collect"):
            return 404, {}, b""
        messages = self.validate(request)
        if request.path == "/debug/mp/collect":
            return ok_json({"validationMessages": messages})
        with self.lock:
            self.problems.extend(messages)
            if not messages:
                self.collected.extend(request.json()["events"])
        return 204, {}, b""

    def validate(self, request: Captured) -> list[dict[str, str]]:
        problems = []
        if request.query.get("measurement_id") != [self.measurement_id]:
            problems.append(message("measurement_id", "unknown measurement_id", "VALUE_INVALID"))
        if request.query.get("api_secret") != [self.api_secret]:
            problems.append(message("api_secret", "wrong or missing api_secret", "VALUE_INVALID"))
        if not request.headers.get("content-type", "").startswith("application/json"):
            problems.append(message("", "the body must be JSON", "VALUE_INVALID"))
        if len(request.body) >= 130_000:
            problems.append(message("", "the post body exceeds 130kB", "VALUE_OUT_OF_BOUNDS"))
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return [*problems, message("", "the body is not JSON", "VALUE_INVALID")]
        return problems + self.body_problems(body)

    def body_problems(self, body: Any) -> list[dict[str, str]]:
        if not isinstance(body, dict):
            return [message("", "the body must be an object", "VALUE_INVALID")]
        problems = [message(key, f"unknown field {key}", "VALUE_INVALID") for key in set(body) - BODY_KEYS]
        if not isinstance(body.get("client_id"), str) or not body["client_id"]:
            problems.append(message("client_id", "client_id is required for web streams", "VALUE_REQUIRED"))
        if "user_id" in body and (not isinstance(body["user_id"], str) or len(body["user_id"]) > 256):
            problems.append(message("user_id", "user_id must be a string of at most 256", "VALUE_INVALID"))
        if "timestamp_micros" in body:
            problems += timestamp_problems("timestamp_micros", body["timestamp_micros"])
        problems += user_property_problems(body.get("user_properties", {}))
        events = body.get("events")
        if not isinstance(events, list) or not events:
            return [*problems, message("events", "at least one event is required", "VALUE_REQUIRED")]
        if len(events) > 25:
            problems.append(message("events", "at most 25 events per request", "EXCEEDED_MAX_ENTITIES"))
        for index, event in enumerate(events):
            problems += event_problems(f"events[{index}]", event)
        return problems


def timestamp_problems(path: str, value: Any) -> list[dict[str, str]]:
    if isinstance(value, int) and not isinstance(value, bool) and MICROS_2000 <= value <= MICROS_2100:
        return []
    return [message(path, f"{value!r} is not a Unix time in microseconds", "VALUE_INVALID")]


def name_problems(path: str, name: Any, limit: int) -> list[dict[str, str]]:
    if not isinstance(name, str) or not NAME.fullmatch(name) or len(name) > limit:
        return [message(path, f"invalid name {name!r}", "NAME_INVALID")]
    if name.startswith(RESERVED_PREFIXES):
        return [message(path, f"reserved prefix in {name!r}", "NAME_RESERVED")]
    return []


def event_problems(path: str, event: Any) -> list[dict[str, str]]:
    if not isinstance(event, dict):
        return [message(path, "an event must be an object", "VALUE_INVALID")]
    problems = name_problems(f"{path}.name", event.get("name"), 40)
    if event.get("name") in RESERVED_EVENTS:
        problems.append(message(f"{path}.name", f"{event['name']} is reserved", "NAME_RESERVED"))
    if "timestamp_micros" in event:
        problems += timestamp_problems(f"{path}.timestamp_micros", event["timestamp_micros"])
    params = event.get("params", {})
    if not isinstance(params, dict) or len(params) > 25:
        return [*problems, message(f"{path}.params", "at most 25 params", "EXCEEDED_MAX_ENTITIES")]
    for name, value in params.items():
        where = f"{path}.params.{name}"
        problems += name_problems(where, name, 40)
        if name == "items":
            problems += items_problems(where, value)
        else:
            limit = {"page_location": 1000, "page_referrer": 420, "page_title": 300}.get(name, 100)
            problems += value_problems(where, value, limit)
    return problems


def value_problems(path: str, value: Any, limit: int) -> list[dict[str, str]]:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return [message(path, f"{value!r} is not a string or a number", "VALUE_INVALID")]
    if isinstance(value, str) and len(value) > limit:
        return [message(path, f"longer than {limit} characters", "VALUE_OUT_OF_BOUNDS")]
    return []


def items_problems(path: str, items: Any) -> list[dict[str, str]]:
    if not isinstance(items, list):
        return [message(path, "items must be a list", "VALUE_INVALID")]
    problems = []
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        if not isinstance(item, dict) or not ({"item_id", "item_name"} & set(item)):
            problems.append(message(where, "an item needs item_id or item_name", "VALUE_REQUIRED"))
            continue
        for key, value in item.items():
            problems += name_problems(f"{where}.{key}", key, 40) + value_problems(
                f"{where}.{key}", value, 100
            )
    return problems


def user_property_problems(properties: Any) -> list[dict[str, str]]:
    if not isinstance(properties, dict) or len(properties) > 25:
        return [message("user_properties", "at most 25 user properties", "EXCEEDED_MAX_ENTITIES")]
    problems = []
    for name, entry in properties.items():
        where = f"user_properties.{name}"
        problems += name_problems(where, name, 24)
        if not isinstance(entry, dict) or "value" not in entry:
            problems.append(message(where, "a user property is {value: …}", "VALUE_INVALID"))
            continue
        problems += value_problems(f"{where}.value", entry["value"], 36)
        if "timestamp_micros" in entry:
            problems += timestamp_problems(f"{where}.timestamp_micros", entry["timestamp_micros"])
    return problems


def test_the_whole_spec_scenario_is_collected_and_the_validation_server_finds_nothing():
    contract = MeasurementProtocol()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url)
        requests = render(destination, config, taken(spec_events.scenario()))
        for request in requests:
            reply = httpx.post(request.url, headers=dict(request.headers), content=request.body)
            assert reply.status_code == 204
            debug = httpx.post(
                request.url.replace("/mp/collect", "/debug/mp/collect"),
                headers=dict(request.headers),
                content=request.body,
            )
            assert debug.json() == {"validationMessages": []}
    assert contract.problems == []
    assert [event["name"] for event in contract.collected] == [
        "identify",
        "view_item",
        "add_to_cart",
        "begin_checkout",
        "purchase",
        "search",
        "sign_up",
        "page_view",
        "screen_view",
        "join_group",
    ]


def test_the_fake_finds_what_google_would_drop():
    contract = MeasurementProtocol()
    broken = {
        "client_id": "",
        "events": [
            {"name": "_bad name", "params": {"engagement_time_msec": 1, "nested": {"a": 1}}},
            {"name": "sign_up", "timestamp_micros": 1_795_860_005_180},  # milliseconds, not µs
        ]
        + [{"name": "x"}] * 24,
    }
    with FakeVendor(contract) as vendor:
        url = f"{vendor.url}/debug/mp/collect?measurement_id={MEASUREMENT_ID}&api_secret=wrong"
        messages = httpx.post(url, json=broken).json()["validationMessages"]
        collect = httpx.post(url.replace("/debug", ""), json=broken)
    assert collect.status_code == 204  # Google says nothing, whatever it gets...
    assert contract.problems == messages  # ...but the fake remembers
    assert {(m["fieldPath"], m["validationCode"]) for m in messages} == {
        ("api_secret", "VALUE_INVALID"),
        ("client_id", "VALUE_REQUIRED"),
        ("events", "EXCEEDED_MAX_ENTITIES"),
        ("events[0].name", "NAME_INVALID"),
        ("events[0].params.nested", "VALUE_INVALID"),
        ("events[1].timestamp_micros", "VALUE_INVALID"),
    }
