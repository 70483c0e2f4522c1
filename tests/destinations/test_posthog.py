"""PostHog: the Spec scenario as exact `/batch/` requests, limits, responses, and a fake
PostHog capture endpoint that checks the wire contract (destinations-analytics.md §4)."""

from __future__ import annotations

import copy
import uuid
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
from trackyard.destinations.posthog import MESSAGE_ID_NAMESPACE, destination, event_uuid
from trackyard.destinations.registry import catalog

API_KEY = "phc_7f3kQ2mZ9yTtest"
SETTINGS = parse_settings(destination.Settings, {"api_key": API_KEY})

# What the Spec's browser context becomes in PostHog's standard properties.
WEB_PROPERTIES: dict[str, Any] = {
    "$ip": "203.0.113.7",
    "$raw_user_agent": spec_events.CONTEXT["userAgent"],
    "$lib": "analytics.js",
    "$lib_version": "next-1.84.3",
    "$locale": "en-US",
    "$timezone": "Europe/Amsterdam",
    "$current_url": "https://shop.example/checkout?utm_source=newsletter",
    "$pathname": "/checkout",
    "$referrer": "https://www.google.com/",
    "$host": "shop.example",
    "utm_campaign": "spring_sale",
    "utm_source": "newsletter",
    "utm_medium": "email",
}
PERSON_SET = {"$set": {"email": "peter@example.com"}}


def settings(**raw: Any) -> Any:
    return parse_settings(destination.Settings, {"api_key": API_KEY, **raw})


def uuid_of(event: dict[str, Any]) -> str:
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, event["messageId"]))


def batch_of(request: Request) -> list[dict[str, Any]]:
    return orjson.loads(request.body)["batch"]


def only_event(event: dict[str, Any], configured: Any = SETTINGS) -> dict[str, Any]:
    [request] = render(destination, configured, [event])
    [body] = batch_of(request)
    return body


def expected(event: dict[str, Any], name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": name,
        "distinct_id": "97980cfea0067",
        "properties": properties,
        "timestamp": "2026-11-28T10:00:05.180Z",
        "uuid": uuid_of(event),
    }


# -- translation ---------------------------------------------------------------------------


def test_identify_is_an_identify_event_that_sets_traits_and_merges_the_anonymous_person():
    event = spec_events.identify()
    [request] = render(destination, SETTINGS, [event])
    assert request.method == "POST"
    assert request.url == "https://us.i.posthog.com/batch/"
    assert request.headers == (("Content-Type", "application/json"),)
    assert orjson.loads(request.body) == {
        "api_key": API_KEY,
        "historical_migration": False,
        "batch": [
            expected(
                event,
                "$identify",
                {
                    **WEB_PROPERTIES,
                    "$set": event["traits"],
                    "$anon_distinct_id": "507f191e810c19729de860ea",
                },
            )
        ],
    }


@pytest.mark.parametrize(
    "make",
    [
        spec_events.product_viewed,
        spec_events.product_added,
        spec_events.checkout_started,
        spec_events.order_completed,
        spec_events.products_searched,
        spec_events.signed_up,
    ],
)
def test_track_keeps_the_event_name_and_properties_and_adds_context_and_person_traits(make):
    event = make()
    assert only_event(event) == expected(
        event, event["event"], {**WEB_PROPERTIES, **PERSON_SET, **event["properties"]}
    )


def test_order_completed_passes_products_and_revenue_unchanged():
    event = spec_events.order_completed()
    body = only_event(event)
    assert body["properties"]["products"] == spec_events.PRODUCTS
    assert (body["properties"]["revenue"], body["properties"]["currency"]) == (25.0, "USD")


def test_page_is_a_pageview_whose_url_comes_from_the_page_not_from_context():
    event = spec_events.page()
    assert only_event(event) == expected(
        event,
        "$pageview",
        {
            **WEB_PROPERTIES,
            **PERSON_SET,
            **event["properties"],
            "$current_url": "https://shop.example/pricing",
            "$pathname": "/pricing",
            "$referrer": "https://www.google.com/",
            "$host": "shop.example",
        },
    )


def test_page_without_page_properties_falls_back_to_context_page():
    event = spec_events.page()
    event["properties"] = {}
    event.pop("name")
    assert only_event(event)["properties"] == {**WEB_PROPERTIES, **PERSON_SET}


def test_screen_is_a_screen_event_named_by_the_screen_with_mobile_context():
    event = spec_events.screen()
    assert only_event(event) == expected(
        event,
        "$screen",
        {
            "$ip": "203.0.113.9",
            "$lib": "analytics-swift",
            "$lib_version": "1.5.0",
            "$os": "iOS",
            "$os_version": "17.1",
            "$app_name": "Shop",
            "$app_version": "3.2.1",
            "$app_build": "321",
            "$device_id": "B5372DB0",
            "$device_manufacturer": "Apple",
            "$device_model": "iPhone15,2",
            "variation": "blue",
            "$screen_name": "Home",
        },
    )


def test_group_is_a_groupidentify_of_the_configured_group_type():
    event = spec_events.group()
    group_properties = {
        "$group_type": "segment_group",
        "$group_key": "0e8c78ea9d97a7b8185e8632",
        "$group_set": event["traits"],
    }
    assert only_event(event) == expected(event, "$groupidentify", {**WEB_PROPERTIES, **group_properties})
    assert only_event(event, settings(group_type="company"))["properties"]["$group_type"] == "company"


def test_alias_creates_an_alias_of_the_previous_id_on_the_user():
    event = spec_events.alias()
    assert only_event(event) == expected(
        event, "$create_alias", {**WEB_PROPERTIES, "alias": "507f191e810c19729de860ea"}
    )


def test_the_whole_spec_scenario_is_one_batch_request_in_log_order():
    events = spec_events.scenario()
    [request] = render(destination, SETTINGS, events)
    names = [body["event"] for body in batch_of(request)]
    assert names == [
        "$identify",
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Products Searched",
        "Signed Up",
        "$pageview",
        "$screen",
        "$groupidentify",
        "$create_alias",
    ]
    assert [body["uuid"] for body in batch_of(request)] == [uuid_of(event) for event in events]


def test_anonymous_identify_sets_person_properties_on_the_anonymous_id():
    event = spec_events.identify()
    event.pop("userId")
    assert only_event(event) == {
        **expected(event, "$set", {**WEB_PROPERTIES, "$set": event["traits"]}),
        "distinct_id": "507f191e810c19729de860ea",
    }


def test_without_anonymous_person_profiles_anonymous_events_are_personless():
    personless = settings(anonymous_person_profiles="false")
    event = spec_events.signed_up()
    event.pop("userId")
    body = only_event(event, personless)
    assert body["distinct_id"] == "507f191e810c19729de860ea"
    assert body["properties"] == {**WEB_PROPERTIES, "$process_person_profile": False, **event["properties"]}
    identified = spec_events.signed_up()
    assert only_event(identified, personless)["properties"]["$set"] == PERSON_SET["$set"]
    anonymous_identify = spec_events.identify()
    anonymous_identify.pop("userId")
    with pytest.raises(Skip, match="person profiles"):
        destination.translate(anonymous_identify, personless)


def test_an_event_without_ip_disables_geoip_so_posthog_does_not_locate_our_server():
    event = spec_events.signed_up()
    event["context"] = {}
    assert only_event(event)["properties"] == {"$geoip_disable": True, **event["properties"]}


def test_context_group_id_joins_the_event_to_its_group():
    event = spec_events.signed_up()
    event["context"]["groupId"] = "0e8c78ea9d97a7b8185e8632"
    properties = only_event(event, settings(group_type="company"))["properties"]
    assert properties["$groups"] == {"company": "0e8c78ea9d97a7b8185e8632"}


def test_an_event_with_no_identifier_is_skipped():
    event = spec_events.signed_up()
    event.pop("userId")
    event.pop("anonymousId")
    with pytest.raises(Skip, match="distinct_id"):
        destination.translate(event, SETTINGS)


def test_an_event_over_900_kib_is_skipped_rather_than_failing_its_batch():
    event = spec_events.signed_up()
    event["properties"]["blob"] = "x" * (900 * 1024)
    with pytest.raises(Skip, match="bytes"):
        destination.translate(event, SETTINGS)


# -- dedupe ids ------------------------------------------------------------------------------


def test_uuid_is_a_stable_uuid5_of_a_non_uuid_message_id():
    # pinned: changing it would make PostHog take retried events as new ones
    assert event_uuid("ajs-next-1764324000000-id-0001") == "b95b53bf-7695-5ae4-a58f-3c9c690c74d1"
    assert event_uuid("ajs-next-1764324000000-id-0001") != event_uuid("ajs-next-1764324000000-id-0002")


def test_a_message_id_that_is_a_uuid_is_the_event_uuid():
    assert event_uuid("C3AB8FF1-3BBD-4A05-9E87-3F2C1F0D7B11") == "c3ab8ff1-3bbd-4a05-9e87-3f2c1f0d7b11"
    event = spec_events.signed_up()
    event["messageId"] = "c3ab8ff1-3bbd-4a05-9e87-3f2c1f0d7b11"
    assert only_event(event)["uuid"] == "c3ab8ff1-3bbd-4a05-9e87-3f2c1f0d7b11"


# -- hosts and settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ({"region": "eu"}, "https://eu.i.posthog.com/batch/"),
        ({"instance_url": "https://posthog.example.com/"}, "https://posthog.example.com/batch/"),
        ({"instance_url": "https://eu.posthog.com"}, "https://eu.i.posthog.com/batch/"),
        ({"instance_url": "https://app.posthog.com"}, "https://us.i.posthog.com/batch/"),
        (
            {
                "region": "eu",
                "instance_url": "https://posthog.example.com",
                "base_url": "http://127.0.0.1:9/",
            },
            "http://127.0.0.1:9/batch/",
        ),
    ],
)
def test_host_comes_from_base_url_then_instance_then_region(raw, url):
    [request] = render(destination, settings(**raw), [spec_events.signed_up()])
    assert request.url == url


def test_historical_migration_marks_the_batch():
    [request] = render(destination, settings(historical_migration="true"), [spec_events.signed_up()])
    assert orjson.loads(request.body)["historical_migration"] is True


def test_missing_api_key_names_the_setting():
    with pytest.raises(SettingsError, match="'api_key'"):
        parse_settings(destination.Settings, {"region": "us"}, "posthog")


def test_a_personal_api_key_is_refused_with_the_fix():
    with pytest.raises(SettingsError, match="project API key"):
        parse_settings(destination.Settings, {"api_key": "phx_personal"})


def test_region_is_a_choice_of_us_and_eu():
    with pytest.raises(SettingsError, match="'region' must be one of us, eu"):
        settings(region="ap")


def test_the_api_key_is_a_secret_and_the_catalog_lists_posthog():
    specs = {spec.name: spec for spec in settings_schema(destination.Settings)}
    assert specs["api_key"].secret and specs["api_key"].required
    assert specs["region"].choices == ("us", "eu")
    assert catalog()["posthog"] is destination
    assert (destination.name, destination.dedupe_field) == ("PostHog", "uuid")


# -- batching --------------------------------------------------------------------------------


def test_batches_hold_at_most_100_events():
    events = [dict(spec_events.signed_up(), messageId=f"m-{i}") for i in range(250)]
    requests = render(destination, SETTINGS, events)
    assert [len(batch_of(request)) for request in requests] == [100, 100, 50]
    assert [body["uuid"] for r in requests for body in batch_of(r)] == [uuid_of(e) for e in events]


def test_batches_stay_under_5_mib():
    events = []
    for i in range(12):
        event = spec_events.signed_up()
        event["messageId"] = f"big-{i}"
        event["properties"]["notes"] = "n" * (800 * 1024)
        events.append(event)
    requests = render(destination, SETTINGS, events)
    assert [len(batch_of(request)) for request in requests] == [6, 6]
    assert all(len(request.body) < 5 * 1024 * 1024 for request in requests)


# -- responses -------------------------------------------------------------------------------


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    [request] = render(destination, SETTINGS, [spec_events.signed_up()])
    return destination.classify(Response(status, headers or {}, body), request, 1)


def test_ok_is_delivered():
    assert respond(200, b'{"status":"Ok"}').verdict == Verdict.DELIVERED
    assert respond(200, b'{"status":1}').verdict == Verdict.DELIVERED


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b"event submitted without a distinct_id"),
        (400, b"failed to parse request: invalid uuid"),
        (401, b"API key is not valid: personal_api_key"),
        (413, b"maximum event size exceeded"),
    ],
)
def test_rejections_give_up_with_posthogs_reason(status, body):
    outcome = respond(status, body)
    assert outcome.verdict == Verdict.GIVE_UP
    assert body.decode() in outcome.reason


def test_rate_limit_and_billing_limit_are_retried_after_retry_after():
    outcome = respond(429, b"rate limited", {"retry-after": "17"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 17.0)


@pytest.mark.parametrize("status", [408, 500, 502, 503])
def test_timeouts_and_server_errors_are_retried(status):
    assert respond(status, b"transient error, please retry").verdict == Verdict.RETRY


# -- a fake PostHog capture endpoint -----------------------------------------------------------


@dataclass
class PostHogCapture:
    """PostHog's `/batch/` contract (rust capture: api.rs, token.rs; posthog-python request.py).

    Stricter than PostHog in one place: an unknown but well-formed key gets 401 here, where
    PostHog answers 200 and drops the events, so that sending the wrong key fails loudly.
    """

    project_key: str
    rejections: list[str] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: Captured) -> Reply:
        problem = self.problem(request)
        if problem is not None:
            self.rejections.append(f"{problem[0]} {problem[1]}")
            return problem[0], {"Content-Type": "text/plain"}, problem[1].encode()
        self.accepted.extend(request.json()["batch"])
        return 200, {"Content-Type": "application/json"}, b'{"status":"Ok"}'

    def problem(self, request: Captured) -> tuple[int, str] | None:
        if (request.method, request.path) != ("POST", "/batch/"):
            return 404, f"no route {request.method} {request.path}"
        if len(request.body) > 20 * 1024 * 1024:
            return 413, "request body too large"
        if not request.headers.get("content-type", "").startswith("application/json"):
            return 400, "failed to decode request: expected application/json"
        try:
            body = request.json()
        except orjson.JSONDecodeError as exc:
            return 400, f"failed to parse request: {exc}"
        token_problem = self.token_problem(body.get("api_key"))
        if token_problem:
            return 401, token_problem
        if not isinstance(body.get("historical_migration", False), bool):
            return 400, "failed to parse request: historical_migration must be a boolean"
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            return 400, "request holds no event"
        for item in batch:
            event_problem = event_contract_problem(item)
            if event_problem:
                return 400, event_problem
        return None

    def token_problem(self, token: Any) -> str | None:
        if not isinstance(token, str) or not token.strip():
            return "event submitted without an api_key"
        if len(token) > 64 or not token.isascii():
            return "API key is not valid: too_long or not_ascii"
        if token.startswith("phx_"):
            return "API key is not valid: personal_api_key"
        if token != self.project_key:
            return f"API key is not valid: no project has the key {token!r}"
        return None


def event_contract_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "failed to parse request: each batch item must be an object"
    if not isinstance(item.get("event"), str) or not item["event"]:
        return "event submitted with an empty event name"
    distinct_id = item.get("distinct_id") or (item.get("properties") or {}).get("distinct_id")
    if not isinstance(distinct_id, str) or not distinct_id:
        return "event submitted without a distinct_id"
    if not isinstance(item.get("properties", {}), dict):
        return "failed to parse request: properties must be an object"
    if "uuid" in item:
        try:
            uuid.UUID(item["uuid"])
        except (ValueError, TypeError, AttributeError):
            return f"failed to parse request: invalid uuid {item['uuid']!r}"
    if "timestamp" in item:
        try:
            datetime.fromisoformat(item["timestamp"])
        except (ValueError, TypeError):
            return f"failed to parse request: timestamp must be an ISO-8601 string, got {item['timestamp']!r}"
    if len(orjson.dumps(item)) > 1024 * 1024:
        return "maximum event size exceeded"
    return None


def test_the_fake_posthog_accepts_the_whole_spec_scenario():
    contract = PostHogCapture(API_KEY)
    with FakeVendor(contract) as fake:
        configured = settings(base_url=fake.url)
        requests = render(destination, configured, spec_events.scenario())
        with httpx.Client(timeout=10) as client:
            statuses = [
                client.post(r.url, content=r.body, headers=dict(r.headers)).status_code for r in requests
            ]
    assert statuses == [200] * len(requests)
    assert contract.rejections == []
    assert len(contract.accepted) == 11


@pytest.mark.parametrize(
    ("breakage", "status", "reason"),
    [
        (lambda body: body.update(api_key="phc_someone_else"), 401, "API key is not valid"),
        (lambda body: body.update(api_key="phx_personal"), 401, "personal_api_key"),
        (lambda body: body.pop("api_key"), 401, "without an api_key"),
        (lambda body: body["batch"][0].update(timestamp=1764324005180), 400, "ISO-8601"),
        (lambda body: body["batch"][0].update(uuid="ajs-next-1764324000000-su-0007"), 400, "invalid uuid"),
        (lambda body: body["batch"][0].pop("distinct_id"), 400, "without a distinct_id"),
        (lambda body: body["batch"][0].update(event=""), 400, "empty event name"),
        (lambda body: body.update(batch=[]), 400, "no event"),
        (lambda body: body.update(batch=body["batch"] * 40_000), 413, "too large"),
    ],
)
def test_the_fake_posthog_rejects_broken_requests(breakage, status, reason):
    contract = PostHogCapture(API_KEY)
    with FakeVendor(contract) as fake:
        [request] = render(destination, settings(base_url=fake.url), [spec_events.signed_up()])
        body = copy.deepcopy(orjson.loads(request.body))
        breakage(body)
        response = httpx.post(request.url, content=orjson.dumps(body), headers=dict(request.headers))
    assert response.status_code == status
    assert reason in response.text
    assert (
        destination.classify(
            Response(response.status_code, dict(response.headers), response.content), request, 1
        ).verdict
        == Verdict.GIVE_UP
    )
