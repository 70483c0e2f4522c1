"""Zendesk: Spec events → exact Support API requests, bulk jobs, classification, settings."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from tests import spec_events
from trackyard.delivery.batching import render
from trackyard.destinations import registry
from trackyard.destinations.base import (
    Outcome,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.zendesk import ZendeskSettings, destination

SUBDOMAIN, AGENT, API_TOKEN = "initech", "agent@initech.example", "6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv"
AUTH = "Basic " + base64.b64encode(f"{AGENT}/token:{API_TOKEN}".encode()).decode()
HEADERS = (("Content-Type", "application/json"), ("Authorization", AUTH))
HOST = "https://initech.zendesk.com"
USER, EMAIL = "97980cfea0067", "peter@example.com"


def settings(**overrides: Any) -> ZendeskSettings:
    return parse_settings(
        ZendeskSettings, {"subdomain": SUBDOMAIN, "email": AGENT, "api_token": API_TOKEN, **overrides}
    )


def single_request(event: dict[str, Any], **overrides: Any) -> tuple[str, dict[str, Any]]:
    [request] = render(destination, settings(**overrides), [event])
    assert (request.method, request.headers) == ("POST", HEADERS)
    return request.url, orjson.loads(request.body)


def test_the_destination_is_in_the_catalog_under_segments_name():
    found = registry.get("zendesk")
    assert (found.name, str(found.category), found.opt_in) == ("Zendesk", "customer support", False)


def test_identify_creates_or_updates_the_user_by_external_id():
    url, body = single_request(spec_events.identify())
    assert url == f"{HOST}/api/v2/users/create_or_update.json"
    assert body == {
        "user": {"external_id": USER, "email": EMAIL, "name": "Peter Gibbons", "phone": "+1 (555) 010-9999"}
    }


def test_identify_maps_user_fields_verification_and_time_zone():
    event = spec_events.identify()
    event["traits"].update(timezone="Europe/Amsterdam", name=None)
    _, body = single_request(event, verified="true", user_fields="plan: plan_tier; logins: login_count")
    assert body == {
        "user": {
            "external_id": USER,
            "email": EMAIL,
            "name": "Peter Gibbons",
            "phone": "+1 (555) 010-9999",
            "time_zone": "Europe/Amsterdam",
            "verified": True,
            "user_fields": {"plan_tier": "premium", "login_count": 5},
        }
    }


def test_identify_names_the_user_by_email_when_traits_have_no_name():
    event = spec_events.identify()
    event["traits"] = {"email": EMAIL}
    del event["userId"]
    _, body = single_request(event)
    assert body == {"user": {"email": EMAIL, "name": EMAIL}}


def test_identify_without_user_id_or_email_is_skipped():
    event = spec_events.identify()
    del event["userId"]
    del event["traits"]["email"]
    with pytest.raises(Skip, match=r"userId \(external_id\) or traits\.email"):
        destination.translate(event, settings())


def test_group_creates_or_updates_the_organization_by_external_id():
    url, body = single_request(spec_events.group())
    assert url == f"{HOST}/api/v2/organizations/create_or_update.json"
    assert body == {
        "organization": {
            "external_id": "0e8c78ea9d97a7b8185e8632",
            "name": "Initech",
            "domain_names": ["initech.example"],
        }
    }


def test_group_details_fields_and_name_fallback():
    event = spec_events.group()
    event["traits"] = {"description": "Software", "plan": "enterprise"}
    _, body = single_request(event, organization_fields="plan: plan_tier")
    assert body == {
        "organization": {
            "external_id": "0e8c78ea9d97a7b8185e8632",
            "name": "0e8c78ea9d97a7b8185e8632",
            "details": "Software",
            "organization_fields": {"plan_tier": "enterprise"},
        }
    }


def test_group_without_group_id_is_skipped():
    event = spec_events.group()
    del event["groupId"]
    with pytest.raises(Skip, match="groupId"):
        destination.translate(event, settings())


@pytest.mark.parametrize(
    "make",
    [
        spec_events.order_completed,
        spec_events.product_viewed,
        spec_events.page,
        spec_events.screen,
        spec_events.alias,
    ],
)
def test_tracks_pages_screens_and_aliases_are_not_taken(make):
    with pytest.raises(Skip, match="Zendesk does not take"):
        destination.translate(make(), settings())


def test_the_subdomain_sets_the_host_and_base_url_replaces_it():
    [request] = render(destination, settings(subdomain="acme"), [spec_events.group()])
    assert request.url == "https://acme.zendesk.com/api/v2/organizations/create_or_update.json"
    [request] = render(destination, settings(base_url="http://127.0.0.1:9"), [spec_events.group()])
    assert request.url == "http://127.0.0.1:9/api/v2/organizations/create_or_update.json"


# -- batching ----------------------------------------------------------------------------


def identifies(count: int) -> list[dict[str, Any]]:
    events = []
    for index in range(count):
        event = spec_events.identify()
        event["userId"] = f"user-{index}"
        event["traits"] = {"email": f"user{index}@example.com"}
        events.append(event)
    return events


def test_by_default_every_user_is_its_own_request():
    assert len(render(destination, settings(), identifies(250))) == 250


def test_2500_users_in_bulk_are_25_jobs_of_100():
    requests = render(destination, settings(batch_size="100"), identifies(2_500))
    assert {request.url for request in requests} == {f"{HOST}/api/v2/users/create_or_update_many.json"}
    bodies = [orjson.loads(request.body) for request in requests]
    assert [len(body["users"]) for body in bodies] == [100] * 25
    assert bodies[0]["users"][0] == {
        "external_id": "user-0",
        "email": "user0@example.com",
        "name": "user0@example.com",
    }


def test_a_bulk_batch_size_over_100_counts_as_100():
    requests = render(destination, settings(batch_size="500"), identifies(250))
    assert [len(orjson.loads(request.body)["users"]) for request in requests] == [100, 100, 50]


# -- classification ----------------------------------------------------------------------


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {})
    return Response(status, headers or {}, raw)


REQUEST = render(destination, settings(), [spec_events.identify()])[0]


@pytest.mark.parametrize("status", [200, 201])
def test_created_or_updated_users_are_delivered(status):
    body = {"user": {"id": 9873843, "external_id": USER, "email": EMAIL}}
    assert destination.classify(respond(status, body), REQUEST, 1) == Outcome.delivered(f"HTTP {status}")


def test_a_queued_bulk_job_is_delivered():
    body = {
        "job_status": {
            "id": "82de0b044094f0c67893ac9fe64f1a99",
            "status": "queued",
            "url": "https://x/jobs/1",
        }
    }
    assert destination.classify(respond(200, body), REQUEST, 100) == Outcome.delivered(
        "HTTP 200: job 82de0b044094f0c67893ac9fe64f1a99 queued"
    )


def test_422_record_invalid_gives_up_with_the_details():
    body = {
        "error": "RecordInvalid",
        "description": "Record validation errors",
        "details": {"name": [{"description": "Name: has already been taken", "error": "DuplicateValue"}]},
    }
    outcome = destination.classify(respond(422, body), REQUEST, 1)
    assert outcome.verdict is Verdict.GIVE_UP and "DuplicateValue" in outcome.reason


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_missing_resources_give_up(status):
    body = {"error": "Couldn't authenticate you"}
    assert destination.classify(respond(status, body), REQUEST, 1).verdict is Verdict.GIVE_UP


def test_409_concurrent_update_is_retried():
    body = {"error": "RecordConflict", "description": "The record was updated by another request"}
    assert destination.classify(respond(409, body), REQUEST, 1).verdict is Verdict.RETRY


def test_429_waits_for_retry_after():
    headers = {"retry-after": "37", "x-rate-limit": "200", "x-rate-limit-remaining": "0"}
    outcome = destination.classify(respond(429, b"Too Many Requests", headers), REQUEST, 1)
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 37.0)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried(status):
    assert destination.classify(respond(status, b"maintenance"), REQUEST, 1).verdict is Verdict.RETRY


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["subdomain", "email", "api_token"])
def test_missing_settings_are_named(missing):
    raw = {"subdomain": SUBDOMAIN, "email": AGENT, "api_token": API_TOKEN}
    del raw[missing]
    with pytest.raises(SettingsError, match=f"'{missing}'"):
        parse_settings(ZendeskSettings, raw, "zendesk")


def test_the_api_token_is_secret():
    schema = {spec.name: spec for spec in settings_schema(ZendeskSettings)}
    assert schema["api_token"].secret and not schema["email"].secret
    assert (schema["batch_size"].default, schema["user_fields"].type) == (1, "mapping")
