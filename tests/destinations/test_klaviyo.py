"""Klaviyo: exact JSON:API bulk-job requests, batching, classification of Klaviyo's answers,
settings, and the whole Spec scenario against a fake that checks Klaviyo's documented contract.

The differential test against the official SDK (`klaviyo-api`) is test_klaviyo_sdk.py.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
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
from trackyard.destinations.klaviyo import KlaviyoSettings, destination

API_KEY = "pk_4f1c0ffee5a1e2b3c4d5e6f7a8b9c0d1e2"
SETTINGS = parse_settings(KlaviyoSettings, {"api_key": API_KEY})
HOST = "https://a.klaviyo.com"
PROFILES_URL = f"{HOST}/api/profile-bulk-import-jobs"
EVENTS_URL = f"{HOST}/api/event-bulk-create-jobs"
HEADERS = (
    ("Content-Type", "application/vnd.api+json"),
    ("Accept", "application/vnd.api+json"),
    ("Authorization", f"Klaviyo-API-Key {API_KEY}"),
    ("revision", "2026-10-15"),
)
TIME = "2026-11-28T10:00:05+00:00"  # the Spec events' timestamp, truncated to the second
PROFILE = {
    "data": {
        "type": "profile",
        "attributes": {
            "external_id": "97980cfea0067",
            "anonymous_id": "507f191e810c19729de860ea",
            "email": "peter@example.com",
        },
    }
}


def settings(**overrides: str) -> KlaviyoSettings:
    return parse_settings(KlaviyoSettings, {"api_key": API_KEY, **overrides})


def only_request(event: dict[str, Any], config: KlaviyoSettings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def body_of(event: dict[str, Any], config: KlaviyoSettings = SETTINGS) -> dict[str, Any]:
    return orjson.loads(only_request(event, config).body)


def events_job(*entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": list(entries)}},
        }
    }


def entry(
    name: str, properties: dict[str, Any], unique_id: str, profile: dict[str, Any] = PROFILE, **extra: Any
):
    attributes = {
        "properties": properties,
        "time": TIME,
        "metric": {"data": {"type": "metric", "attributes": {"name": name}}},
        "unique_id": unique_id,
        **extra,
    }
    return {
        "type": "event-bulk-create",
        "attributes": {"profile": profile, "events": {"data": [{"type": "event", "attributes": attributes}]}},
    }


def track(event_name: str, properties: dict[str, Any], message_id: str = "m-1") -> dict[str, Any]:
    return spec_events.track(event_name, properties, message_id)


# -- identify -------------------------------------------------------------------------------


def test_identify_is_a_profile_import_job_with_standard_attributes_and_custom_properties():
    request = only_request(spec_events.identify())
    assert (request.method, request.url, request.headers) == ("POST", PROFILES_URL, HEADERS)
    assert orjson.loads(request.body) == {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "peter@example.com",
                                "phone_number": "+15550109999",
                                "external_id": "97980cfea0067",
                                "first_name": "Peter",
                                "last_name": "Gibbons",
                                "location": {
                                    "address1": "6th St",
                                    "city": "San Francisco",
                                    "region": "CA",
                                    "zip": "94107",
                                    "country": "US",
                                },
                                "properties": {
                                    "name": "Peter Gibbons",
                                    "plan": "premium",
                                    "logins": 5,
                                    "createdAt": "2026-01-15T09:30:00.000Z",
                                },
                            },
                        }
                    ]
                }
            },
        }
    }


def test_company_title_avatar_and_a_phone_that_is_not_e164():
    event = spec_events.identify()
    event["traits"] = {
        "email": "p@example.com",
        "company": {"name": "Initech", "employees": 329},
        "title": "Engineer",
        "avatar": "https://img.example/p.png",
        "phone": "010-9999",
        "address": {"city": "Paris", "postal_code": "75001"},
    }
    assert body_of(event)["data"]["attributes"]["profiles"]["data"][0]["attributes"] == {
        "email": "p@example.com",
        "external_id": "97980cfea0067",
        "organization": "Initech",
        "title": "Engineer",
        "image": "https://img.example/p.png",
        "location": {"city": "Paris", "zip": "75001"},
        "properties": {"phone": "010-9999"},  # kept, but not as phone_number: Klaviyo would refuse it
    }


def test_the_list_setting_adds_imported_profiles_to_that_list():
    job = body_of(spec_events.identify(), settings(list_id="Y6nRLr"))["data"]
    assert job["relationships"] == {"lists": {"data": [{"type": "list", "id": "Y6nRLr"}]}}


def test_an_identify_klaviyo_cannot_key_is_skipped():
    event = spec_events.identify()
    del event["userId"]
    event["traits"] = {"plan": "free"}
    with pytest.raises(Skip, match=r"userId, traits\.email or traits\.phone"):
        destination.translate(event, SETTINGS)


# -- track ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (spec_events.product_viewed, {"value": 18.99, "value_currency": "USD"}),
        (spec_events.product_added, {}),
        (spec_events.checkout_started, {"value": 25.0, "value_currency": "USD"}),  # revenue before value
        (spec_events.products_searched, {}),
        (spec_events.signed_up, {}),
    ],
    ids=lambda item: getattr(item, "__name__", ""),
)
def test_a_track_is_an_event_of_its_metric_deduplicated_by_message_id(make, value):
    event = make()
    request = only_request(event)
    assert (request.method, request.url, request.headers) == ("POST", EVENTS_URL, HEADERS)
    assert orjson.loads(request.body) == events_job(
        entry(event["event"], event["properties"], event["messageId"], **value)
    )


def test_order_completed_is_the_order_and_one_ordered_product_per_product():
    event = spec_events.order_completed()
    order = {key: value for key, value in event["properties"].items() if key != "products"}
    monopoly, uno = spec_events.PRODUCTS
    assert body_of(event) == events_job(
        entry("Order Completed", event["properties"], event["messageId"], value=25.0, value_currency="USD"),
        entry(
            "Ordered Product",
            {**order, **monopoly},
            f"{event['messageId']}:0",
            value=18.99,
            value_currency="USD",
        ),
        entry(
            "Ordered Product", {**order, **uno}, f"{event['messageId']}:1", value=6.0, value_currency="USD"
        ),
    )


def test_appendix_a4_order_completed_golden():
    event = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u123",
        "anonymousId": "a-1",
        "messageId": "m-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "receivedAt": "2024-05-01T12:00:01.000Z",
        "context": {
            "ip": "203.0.113.7",
            "traits": {"email": "jane.doe@example.com", "phone": "+1 (555) 123-4567", "firstName": "Jane"},
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
    profile = {
        "data": {
            "type": "profile",
            "attributes": {
                "external_id": "u123",
                "anonymous_id": "a-1",
                "email": "jane.doe@example.com",
                "phone_number": "+15551234567",
            },
        }
    }
    time = {"time": "2024-05-01T12:00:00+00:00"}
    order = {"order_id": "o-9", "total": 30, "revenue": 25, "currency": "USD"}
    mug, tee = event["properties"]["products"]
    entries = body_of(event)["data"]["attributes"]["events-bulk-create"]["data"]
    expected = [
        entry("Order Completed", event["properties"], "m-1", profile, value=25, value_currency="USD", **time),
        entry("Ordered Product", {**order, **mug}, "m-1:0", profile, value=20, value_currency="USD", **time),
        entry("Ordered Product", {**order, **tee}, "m-1:1", profile, value=5, value_currency="USD", **time),
    ]
    assert entries == expected


def test_time_is_truncated_to_the_second():
    event = spec_events.signed_up()
    event["timestamp"] = "2026-11-28T10:00:05.999Z"
    attributes = body_of(event)["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]
    assert attributes["events"]["data"][0]["attributes"]["time"] == TIME


@pytest.mark.parametrize("when", ["1999-12-31T23:59:59.000Z", "2028-01-01T00:00:00.000Z"])
def test_events_outside_klaviyos_time_window_are_skipped(when):
    event = spec_events.signed_up()
    event["timestamp"] = when
    with pytest.raises(Skip, match="2000 to one year ahead"):
        destination.translate(event, SETTINGS)


def test_an_event_with_more_than_400_properties_is_skipped():
    with pytest.raises(Skip, match="at most 400"):
        destination.translate(track("Big", {f"p{i}": i for i in range(401)}), SETTINGS)


def test_an_anonymous_event_keeps_its_anonymous_profile():
    event = spec_events.signed_up()
    del event["userId"]
    del event["context"]["traits"]
    profile = body_of(event)["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]["profile"]
    assert profile == {
        "data": {"type": "profile", "attributes": {"anonymous_id": "507f191e810c19729de860ea"}}
    }


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (spec_events.page, "no page calls"),
        (spec_events.screen, "no screen calls"),
        (spec_events.group, "no group calls"),
        (spec_events.alias, "no alias"),
    ],
)
def test_page_screen_group_and_alias_are_skipped_with_a_reason(make, reason):
    with pytest.raises(Skip, match=reason):
        destination.translate(make(), SETTINGS)


# -- batching -------------------------------------------------------------------------------


def test_2500_events_are_cut_into_jobs_of_1000():
    events = [track("Video Played", {"n": i}, f"m-{i}") for i in range(2500)]
    requests = render(destination, SETTINGS, events)
    jobs = [orjson.loads(r.body)["data"]["attributes"]["events-bulk-create"]["data"] for r in requests]
    assert [len(job) for job in jobs] == [1000, 1000, 500]
    numbers = [
        e["attributes"]["events"]["data"][0]["attributes"]["properties"]["n"] for job in jobs for e in job
    ]
    assert numbers == list(range(2500))


def test_profiles_and_events_travel_in_separate_jobs():
    requests = render(
        destination, SETTINGS, [spec_events.identify(), spec_events.signed_up(), spec_events.identify()]
    )
    assert [
        (r.url, len(orjson.loads(r.body)["data"]["attributes"].popitem()[1]["data"])) for r in requests
    ] == [
        (PROFILES_URL, 2),
        (EVENTS_URL, 1),
    ]


# -- classification -------------------------------------------------------------------------


def events_request(count: int) -> Request:
    [request] = render(
        destination, SETTINGS, [track("Video Played", {"n": i}, f"m-{i}") for i in range(count)]
    )
    return request


def classify(status: int, body: Any, headers: dict[str, str] | None = None, count: int = 3):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return destination.classify(Response(status, headers or {}, raw), events_request(count), count)


def test_an_accepted_job_is_delivered_with_its_id():
    outcome = classify(202, {"data": {"type": "event-bulk-create-job", "id": "job-1"}})
    assert (outcome.verdict, outcome.reason) == (Verdict.DELIVERED, "HTTP 202: job job-1 queued")


def test_a_400_pointing_at_items_gives_those_up_and_retries_the_others():
    pointer = "/data/attributes/events-bulk-create/data/1/attributes/events/data/0/attributes/time"
    body = {
        "errors": [
            {
                "id": "e1",
                "status": 400,
                "code": "invalid",
                "title": "Invalid input.",
                "detail": "'time' must be after 2000",
                "source": {"pointer": pointer},
            }
        ]
    }
    outcomes = classify(400, body)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.RETRY, Verdict.GIVE_UP, Verdict.RETRY]
    assert "'time' must be after 2000" in outcomes[1].reason


@pytest.mark.parametrize("status", [400, 401, 403])
def test_other_client_errors_give_up_with_klaviyos_words(status):
    body = {"errors": [{"status": status, "code": "not_authenticated", "detail": "Incorrect API key"}]}
    outcome = classify(status, body)
    assert outcome.verdict is Verdict.GIVE_UP
    assert f"HTTP {status}" in outcome.reason and "Incorrect API key" in outcome.reason


def test_a_429_waits_for_retry_after():
    headers = {
        "retry-after": "7",
        "ratelimit-limit": "150",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "42",
    }
    outcome = classify(429, {"errors": [{"status": 429, "code": "throttled"}]}, headers)
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 7.0)


@pytest.mark.parametrize("status", [500, 503, 504])
def test_server_errors_are_retried(status):
    assert classify(status, b"upstream timeout").verdict is Verdict.RETRY


# -- settings -------------------------------------------------------------------------------


def test_a_missing_api_key_is_named():
    with pytest.raises(SettingsError, match="'api_key'"):
        parse_settings(KlaviyoSettings, {"revision": "2026-10-15"})


def test_the_api_key_is_secret():
    schema = {spec.name: spec for spec in settings_schema(KlaviyoSettings)}
    assert schema["api_key"].secret and schema["api_key"].required
    assert not schema["revision"].secret and schema["revision"].default == "2026-10-15"


def test_the_revision_header_follows_the_setting_and_must_be_a_date():
    assert (
        only_request(spec_events.signed_up(), settings(revision="2025-01-15")).header("revision")
        == "2025-01-15"
    )
    with pytest.raises(SettingsError, match="'revision'"):
        settings(revision="latest")


def test_base_url_replaces_the_host():
    request = only_request(spec_events.signed_up(), settings(base_url="http://127.0.0.1:9/proxy/"))
    assert request.url == "http://127.0.0.1:9/proxy/api/event-bulk-create-jobs"


def test_the_catalog_knows_it_by_segments_name():
    entry_ = registry.get("klaviyo")
    assert entry_.name == "Klaviyo"
    assert entry_.catalog_entry()["category"] == "email"
    assert (entry_.batching.max_events, entry_.default_rate_limit) == (1000, 2.5)


# -- the contract, played by a fake Klaviyo ----------------------------------------------------

REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
LIMITS = {"/api/event-bulk-create-jobs": 1000, "/api/profile-bulk-import-jobs": 10_000}
JOB_TYPES = {
    "/api/event-bulk-create-jobs": ("event-bulk-create-job", "events-bulk-create"),
    "/api/profile-bulk-import-jobs": ("profile-bulk-import-job", "profiles"),
}


def error(status: int, code: str, detail: str, pointer: str = "/data") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": detail,
        "detail": detail,
        "source": {"pointer": pointer},
    }


def iso_time_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return "'time' must be an ISO-8601 date-time string"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "'time' must be an ISO-8601 date-time string"
    if moment.tzinfo is None:
        return "'time' needs a UTC offset"
    if not datetime(2000, 1, 1, tzinfo=UTC) <= moment <= datetime.now(UTC) + timedelta(days=366):
        return "'time' must be after 2000 and at most one year ahead"
    return None


def profile_problems(attributes: Any, allowed_ids: tuple[str, ...]) -> list[str]:
    if not isinstance(attributes, dict):
        return ["profile attributes must be an object"]
    problems = []
    if not any(isinstance(attributes.get(key), str) and attributes[key] for key in allowed_ids):
        problems.append(f"one of {', '.join(allowed_ids)} is required")
    if "phone_number" in attributes and not E164.match(str(attributes["phone_number"])):
        problems.append("'phone_number' must be E.164")
    if "anonymous_id" in attributes and "anonymous_id" not in allowed_ids:
        problems.append("'anonymous_id' is not a valid field for the resource 'profile'")
    return problems


def event_entry_problems(item: Any) -> list[str]:
    attributes = item.get("attributes") if isinstance(item, dict) else None
    if item.get("type") != "event-bulk-create" or not isinstance(attributes, dict):
        return ["each item must be an event-bulk-create resource"]
    profile = (attributes.get("profile") or {}).get("data") or {}
    problems = profile_problems(
        profile.get("attributes"), ("email", "phone_number", "external_id", "anonymous_id")
    )
    events = (attributes.get("events") or {}).get("data")
    if not isinstance(events, list) or not events:
        return [*problems, "'events' must hold at least one event"]
    for event in events:
        fields = event.get("attributes") or {}
        name = (((fields.get("metric") or {}).get("data") or {}).get("attributes") or {}).get("name")
        if not isinstance(name, str) or not name:
            problems.append("the metric needs a name")
        if not isinstance(fields.get("properties"), dict) or len(fields["properties"]) > 400:
            problems.append("'properties' must be an object of at most 400 properties")
        if "time" in fields and (problem := iso_time_problem(fields["time"])):
            problems.append(problem)
        if "value" in fields and (
            isinstance(fields["value"], bool) or not isinstance(fields["value"], int | float)
        ):
            problems.append("'value' must be a number")
        if "unique_id" in fields and not isinstance(fields["unique_id"], str):
            problems.append("'unique_id' must be a string")
    return problems


def profile_item_problems(item: Any) -> list[str]:
    if not isinstance(item, dict) or item.get("type") != "profile":
        return ["each item must be a profile resource"]
    return profile_problems(item.get("attributes"), ("email", "phone_number", "external_id"))


class KlaviyoBulkJobs:
    """Klaviyo's bulk job endpoints as documented: `Klaviyo-API-Key` auth (401), a `revision`
    header (400), the JSON:API document of the job type, at most 1,000 events or 10,000
    profiles; any invalid item refuses the whole job with a 400 whose errors point at it.
    An accepted job answers 202. `refusals` keeps every non-2xx answer."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.accepted: dict[str, list[dict[str, Any]]] = {"events": [], "profiles": []}
        self.refusals: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        status, answer = self.answer(request)
        with self.lock:
            if status >= 300:
                self.refusals.append((status, answer))
        return ok_json(answer, status)

    def answer(self, request: Captured) -> tuple[int, dict[str, Any]]:
        if request.method != "POST" or request.path.rstrip("/") not in LIMITS:
            return 404, {"errors": [error(404, "not_found", "Not found.")]}
        path = request.path.rstrip("/")
        if request.headers.get("authorization") != f"Klaviyo-API-Key {self.api_key}":
            return 401, {"errors": [error(401, "not_authenticated", "Incorrect authentication credentials.")]}
        if not REVISION.match(request.headers.get("revision", "")):
            return 400, {"errors": [error(400, "invalid", "Missing or invalid revision header.")]}
        if request.headers.get("content-type", "").split(";")[0] not in (
            "application/vnd.api+json",
            "application/json",
        ):
            return 415, {"errors": [error(415, "unsupported_media_type", "Unsupported media type.")]}
        try:
            document = request.json()
        except orjson.JSONDecodeError:
            return 400, {"errors": [error(400, "parse_error", "Malformed JSON.")]}
        job_type, list_name = JOB_TYPES[path]
        data = document.get("data") if isinstance(document, dict) else None
        items = (((data or {}).get("attributes") or {}).get(list_name) or {}).get("data")
        if not isinstance(data, dict) or data.get("type") != job_type or not isinstance(items, list):
            return 400, {"errors": [error(400, "invalid", f"Expected a {job_type} document.")]}
        if len(items) > LIMITS[path]:
            pointer = f"/data/attributes/{list_name}/data"
            return 400, {"errors": [error(400, "invalid", f"At most {LIMITS[path]} items.", pointer)]}
        check = event_entry_problems if list_name == "events-bulk-create" else profile_item_problems
        errors = [
            error(400, "invalid", problem, f"/data/attributes/{list_name}/data/{index}/attributes")
            for index, item in enumerate(items)
            for problem in check(item)
        ]
        if errors:
            return 400, {"errors": errors}
        with self.lock:
            self.accepted["events" if list_name == "events-bulk-create" else "profiles"].extend(items)
        return 202, {"data": {"type": job_type, "id": str(uuid.uuid4()), "attributes": {"status": "queued"}}}


def send(request: Request) -> httpx.Response:
    return httpx.post(request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = KlaviyoBulkJobs()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url, list_id="Y6nRLr")
        events = [event for event in spec_events.scenario() if event["type"] in ("identify", "track")]
        for request in render(destination, config, events):
            assert send(request).status_code == 202
    assert contract.refusals == []
    # five tracks plus the order and its two products; one identify
    assert (len(contract.accepted["events"]), len(contract.accepted["profiles"])) == (8, 1)


def test_the_fake_refuses_what_klaviyo_refuses():
    contract = KlaviyoBulkJobs()
    with FakeVendor(contract) as vendor:
        good = only_request(spec_events.signed_up(), settings(base_url=vendor.url))
        headers = dict(good.headers)
        assert (
            send(
                Request(
                    good.method, good.url, (*HEADERS[:2], ("Authorization", "Klaviyo-API-Key x")), good.body
                )
            ).status_code
            == 401
        )
        no_revision = {key: value for key, value in headers.items() if key != "revision"}
        assert httpx.post(good.url, headers=no_revision, content=good.body).status_code == 400
        [item] = orjson.loads(good.body)["data"]["attributes"]["events-bulk-create"]["data"]
        too_many = Request(good.method, good.url, good.headers, orjson.dumps(events_job(*[item] * 1001)))
        assert send(too_many).status_code == 400
        epoch_time = copy.deepcopy(item)
        epoch_time["attributes"]["events"]["data"][0]["attributes"]["time"] = 1795860005
        no_profile = copy.deepcopy(item)
        no_profile["attributes"]["profile"]["data"]["attributes"] = {}
        mixed = Request(
            good.method, good.url, good.headers, orjson.dumps(events_job(item, epoch_time, no_profile))
        )
        reply = send(mixed)
        assert reply.status_code == 400
        pointers = [(e["source"]["pointer"], e["detail"]) for e in reply.json()["errors"]]
        assert pointers == [
            (
                "/data/attributes/events-bulk-create/data/1/attributes",
                "'time' must be an ISO-8601 date-time string",
            ),
            (
                "/data/attributes/events-bulk-create/data/2/attributes",
                "one of email, phone_number, external_id, anonymous_id is required",
            ),
        ]
        outcomes = destination.classify(Response(400, {}, reply.content), mixed, 3)
        assert [outcome.verdict for outcome in outcomes] == [Verdict.RETRY, Verdict.GIVE_UP, Verdict.GIVE_UP]
    assert [status for status, _ in contract.refusals] == [401, 400, 400, 400]
