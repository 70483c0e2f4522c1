"""Segment Connections (forwarder): the Spec scenario as exact `/v1/batch` requests, the
receiver's limits, responses, and a fake collector that checks the HTTP Tracking API
contract (destinations-analytics.md §6, segment-contract.md §1)."""

from __future__ import annotations

import base64
import copy
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
from trackyard.destinations.registry import catalog
from trackyard.destinations.segment_forwarder import destination

WRITE_KEY = "wk_receiver_9c41"
AUTHORIZATION = "Basic " + base64.b64encode(b"wk_receiver_9c41:").decode()
SETTINGS = parse_settings(destination.Settings, {"write_key": WRITE_KEY})


def settings(**raw: Any) -> Any:
    return parse_settings(destination.Settings, {"write_key": WRITE_KEY, **raw})


def batch_of(request: Request) -> list[dict[str, Any]]:
    return orjson.loads(request.body)["batch"]


def forwarded(event: dict[str, Any]) -> dict[str, Any]:
    """What the receiver must get: the stored event without the fields it sets itself."""
    return {k: v for k, v in event.items() if k not in ("receivedAt", "sentAt", "originalTimestamp")}


# -- translation ---------------------------------------------------------------------------


def test_a_track_is_posted_to_the_batch_endpoint_with_the_write_key_as_basic_auth():
    event = spec_events.order_completed()
    [request] = render(destination, SETTINGS, [event])
    assert request.method == "POST"
    assert request.url == "https://api.segment.io/v1/batch"
    assert request.headers == (("Content-Type", "application/json"), ("Authorization", AUTHORIZATION))
    assert orjson.loads(request.body) == {
        "batch": [
            {
                "type": "track",
                "messageId": "ajs-next-1764324000000-oc-0002",
                "anonymousId": "507f191e810c19729de860ea",
                "userId": "97980cfea0067",
                "context": spec_events.CONTEXT,
                "integrations": {},
                "timestamp": "2026-11-28T10:00:05.180Z",
                "channel": "browser",
                "event": "Order Completed",
                "properties": event["properties"],
            }
        ]
    }


@pytest.mark.parametrize("event", spec_events.scenario(), ids=lambda event: event["messageId"])
def test_every_spec_call_is_forwarded_whole_but_for_the_receivers_own_fields(event):
    [request] = render(destination, SETTINGS, [event])
    assert batch_of(request) == [forwarded(event)]


def test_timestamp_is_the_skew_corrected_time_and_no_sent_at_travels():
    [request] = render(destination, SETTINGS, [spec_events.signed_up()])
    envelope = orjson.loads(request.body)
    [body] = envelope["batch"]
    assert body["timestamp"] == "2026-11-28T10:00:05.180Z"  # receivedAt − (sentAt − originalTimestamp)
    assert not {"sentAt", "receivedAt", "originalTimestamp"} & set(body)
    assert set(envelope) == {"batch"}


def test_integrations_and_unknown_fields_travel_unchanged():
    event = spec_events.signed_up()
    event["integrations"] = {"All": False, "Mixpanel": {"people": True}}
    event["_metadata"] = {"bundled": ["Segment.io"], "unbundled": []}
    [body] = batch_of(render(destination, SETTINGS, [event])[0])
    assert body["integrations"] == {"All": False, "Mixpanel": {"people": True}}
    assert body["_metadata"] == {"bundled": ["Segment.io"], "unbundled": []}


def test_the_spec_scenario_is_one_request_in_log_order():
    events = spec_events.scenario()
    [request] = render(destination, SETTINGS, events)
    assert batch_of(request) == [forwarded(event) for event in events]


# -- hosts and settings ----------------------------------------------------------------------


def test_eu_workspaces_use_segments_eu_host_and_base_url_points_anywhere():
    [eu] = render(destination, settings(region="eu"), [spec_events.page()])
    assert eu.url == "https://events.eu1.segmentapis.com/v1/batch"
    [own] = render(destination, settings(base_url="https://cdp.example.com/"), [spec_events.page()])
    assert own.url == "https://cdp.example.com/v1/batch"


def test_missing_write_key_names_the_setting():
    with pytest.raises(SettingsError, match="'write_key'"):
        parse_settings(destination.Settings, {}, "segment")


def test_the_write_key_is_a_secret_and_the_catalog_uses_segments_name():
    specs = {spec.name: spec for spec in settings_schema(destination.Settings)}
    assert specs["write_key"].secret and specs["write_key"].required
    assert specs["region"].choices == ("us", "eu")
    assert catalog()["segment"] is destination
    assert (destination.name, destination.dedupe_field) == ("Segment Connections", "messageId")
    assert destination.default_rate_limit == 1000


# -- the receiver's limits -------------------------------------------------------------------


def small_track(message_id: str) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": "97980cfea0067",
        "event": "Ping",
        "timestamp": "2026-11-28T10:00:05.180Z",
    }


def test_batches_hold_at_most_2500_events():
    events = [small_track(f"m-{i:04}") for i in range(2600)]
    requests = render(destination, SETTINGS, events)
    assert [len(batch_of(request)) for request in requests] == [2500, 100]
    assert [b["messageId"] for r in requests for b in batch_of(r)] == [e["messageId"] for e in events]


def test_batches_stay_under_500_kb():
    events = []
    for i in range(40):
        event = spec_events.signed_up()
        event["messageId"] = f"big-{i}"
        event["properties"]["notes"] = "n" * 30_000
        events.append(event)
    requests = render(destination, SETTINGS, events)
    assert [len(batch_of(request)) for request in requests] == [15, 15, 10]
    assert all(len(request.body) <= 475_000 for request in requests)


def test_an_event_over_32_kb_is_skipped_because_the_receiver_would_refuse_its_batch():
    event = spec_events.signed_up()
    event["properties"]["notes"] = "n" * (32 * 1024)
    with pytest.raises(Skip, match="32768"):
        destination.translate(event, SETTINGS)


# -- responses -------------------------------------------------------------------------------


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    [request] = render(destination, SETTINGS, [spec_events.signed_up()])
    return destination.classify(Response(status, headers or {}, body), request, 1)


def test_success_is_delivered():
    assert respond(200, b'{"success": true}').verdict == Verdict.DELIVERED


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, b'{"code":"invalid_json","message":"the body is not valid JSON"}'),
        (400, b'{"code":"request_too_large","message":"a batch request may be at most 500 KB"}'),
        (401, b'{"code":"invalid_write_key","message":"unknown write key"}'),
    ],
)
def test_rejections_give_up_with_the_receivers_message(status, body):
    outcome = respond(status, body)
    assert outcome.verdict == Verdict.GIVE_UP
    assert body.decode() in outcome.reason


def test_rate_limits_are_retried_after_retry_after_or_x_ratelimit_reset():
    assert respond(429, b"", {"retry-after": "5", "x-ratelimit-reset": "5"}).retry_after == 5.0
    outcome = respond(429, b"", {"x-ratelimit-reset": "12"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 12.0)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(status):
    assert respond(status).verdict == Verdict.RETRY


# -- a fake Segment-compatible collector -------------------------------------------------------

CALL_TYPES = ("identify", "track", "page", "screen", "group", "alias")


@dataclass
class TrackingAPI:
    """The HTTP Tracking API `/v1/batch` contract (segment-contract.md §1.3–§1.7).

    Stricter than Segment in two places, so mistakes fail loudly: an unknown write key
    gets 401 (trackyard's and RudderStack's answer; Segment answers 200 and drops), and
    a batch over 2,500 events gets 400 (Segment answers 200 and rejects the events).
    """

    write_key: str
    rejections: list[str] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: Captured) -> Reply:
        problem = self.problem(request)
        if problem is not None:
            status, code, message = problem
            self.rejections.append(f"{status} {code}: {message}")
            return (
                status,
                {"Content-Type": "application/json"},
                orjson.dumps({"code": code, "message": message}),
            )
        self.accepted.extend(request.json()["batch"])
        return 200, {"Content-Type": "application/json"}, b'{"success": true}'

    def problem(self, request: Captured) -> tuple[int, str, str] | None:
        if (request.method, request.path) != ("POST", "/v1/batch"):
            return 404, "not_found", f"no route {request.method} {request.path}"
        if self.write_key_of(request) != self.write_key:
            return 401, "invalid_write_key", "unknown write key: send it as the Basic auth user name"
        if len(request.body) > 500 * 1024:
            return 400, "request_too_large", "a batch request may be at most 500 KB"
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return 400, "invalid_json", "the body is not valid JSON"
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, list):
            return 400, "invalid_batch", "'batch' must be an array of events"
        if len(batch) > 2500:
            return 400, "too_many_events", f"at most 2500 events a batch; got {len(batch)}"
        for item in batch:
            message_problem = message_contract_problem(item)
            if message_problem:
                return 400, "invalid_event", message_problem
        return None

    @staticmethod
    def write_key_of(request: Captured) -> str | None:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        user, _, _password = base64.b64decode(credentials).decode().partition(":")
        return user


def message_contract_problem(item: Any) -> str | None:
    if not isinstance(item, dict) or item.get("type") not in CALL_TYPES:
        return f"'type' must be one of {', '.join(CALL_TYPES)}"
    if len(orjson.dumps(item)) > 32 * 1024:
        return "an event may be at most 32 KB"
    kind = item["type"]
    if kind == "alias" and not (item.get("userId") and item.get("previousId")):
        return "alias requires both 'userId' and 'previousId'"
    if kind != "alias" and not (item.get("userId") or item.get("anonymousId")):
        return f"{kind} requires 'userId' or 'anonymousId'"
    if kind == "track" and not item.get("event"):
        return "track requires 'event'"
    if kind == "group" and not item.get("groupId"):
        return "group requires 'groupId'"
    if not isinstance(item.get("messageId"), str) or len(item["messageId"]) > 100:
        return "'messageId' must be a string of at most 100 characters"
    for name in ("timestamp", "sentAt", "originalTimestamp"):
        if name in item:
            try:
                datetime.fromisoformat(str(item[name]).replace("Z", "+00:00"))
            except ValueError:
                return f"'{name}' must be an ISO-8601 date-time; got {item[name]!r}"
            if not isinstance(item[name], str):
                return f"'{name}' must be an ISO-8601 string; got {item[name]!r}"
    return None


def test_the_fake_collector_accepts_the_whole_spec_scenario():
    contract = TrackingAPI(WRITE_KEY)
    with FakeVendor(contract) as fake:
        [request] = render(destination, settings(base_url=fake.url), spec_events.scenario())
        response = httpx.post(request.url, content=request.body, headers=dict(request.headers))
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert contract.rejections == []
    assert [m["messageId"] for m in contract.accepted] == [e["messageId"] for e in spec_events.scenario()]


@pytest.mark.parametrize(
    ("breakage", "status", "code"),
    [
        (
            lambda body, headers: headers.update(
                Authorization="Basic " + base64.b64encode(b"other:").decode()
            ),
            401,
            "invalid_write_key",
        ),
        (lambda body, headers: headers.pop("Authorization"), 401, "invalid_write_key"),
        (lambda body, headers: body["batch"][0].update(timestamp=1764324005180), 400, "invalid_event"),
        (lambda body, headers: body["batch"][0].pop("event"), 400, "invalid_event"),
        (lambda body, headers: body["batch"][0].update(messageId="m" * 101), 400, "invalid_event"),
        (lambda body, headers: body.update(batch=body["batch"] * 2501), 400, "request_too_large"),
        (
            lambda body, headers: body["batch"][0]["properties"].update(notes="n" * 33_000),
            400,
            "invalid_event",
        ),
    ],
)
def test_the_fake_collector_rejects_broken_requests(breakage, status, code):
    contract = TrackingAPI(WRITE_KEY)
    with FakeVendor(contract) as fake:
        [request] = render(destination, settings(base_url=fake.url), [spec_events.signed_up()])
        body, headers = copy.deepcopy(orjson.loads(request.body)), dict(request.headers)
        breakage(body, headers)
        response = httpx.post(request.url, content=orjson.dumps(body), headers=headers)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert (
        destination.classify(
            Response(response.status_code, dict(response.headers), response.content), request, 1
        ).verdict
        == Verdict.GIVE_UP
    )


def test_the_fake_collector_refuses_more_than_2500_events():
    contract = TrackingAPI(WRITE_KEY)
    with FakeVendor(contract) as fake:
        [request] = render(destination, settings(base_url=fake.url), [spec_events.alias()])
        body = {"batch": [small_track(f"m-{i:04}") for i in range(2501)]}
        response = httpx.post(request.url, content=orjson.dumps(body), headers=dict(request.headers))
    assert (response.status_code, response.json()["code"]) == (400, "too_many_events")
