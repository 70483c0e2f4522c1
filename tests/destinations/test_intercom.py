"""Intercom: Spec events → exact requests (users, events), regions, classification, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests import spec_events
from trackyard.delivery.batching import render
from trackyard.destinations import registry
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
from trackyard.destinations.intercom import IntercomSettings, destination

TOKEN = "dG9rOmV4YW1wbGU6MTIzNDU2Nzg5MDE="
HEADERS = (
    ("Content-Type", "application/json"),
    ("Authorization", f"Bearer {TOKEN}"),
    ("Accept", "application/json"),
    ("Intercom-Version", "1.4"),
)
USERS, EVENTS = "https://api.intercom.io/users", "https://api.intercom.io/events"
USER, EMAIL = "97980cfea0067", "peter@example.com"
EVENT_TIME = int(datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC).timestamp())  # timestamp, ms floored
CREATED_AT = int(datetime(2026, 1, 15, 9, 30, tzinfo=UTC).timestamp())


def settings(**overrides: Any) -> IntercomSettings:
    return parse_settings(IntercomSettings, {"access_token": TOKEN, **overrides})


def single_request(event: dict[str, Any], **overrides: Any) -> tuple[str, dict[str, Any]]:
    [request] = render(destination, settings(**overrides), [event])
    assert (request.method, request.headers) == ("POST", HEADERS)
    return request.url, orjson.loads(request.body)


# -- translation -------------------------------------------------------------------------


def test_the_destination_is_in_the_catalog_under_segments_name():
    found = registry.get("intercom")
    assert (found.name, str(found.category), found.batching.max_events) == ("Intercom", "customer support", 1)


def test_identify_creates_or_updates_the_user_with_flat_custom_attributes():
    url, body = single_request(spec_events.identify())
    assert url == USERS
    assert body == {
        "user_id": USER,
        "email": EMAIL,
        "name": "Peter Gibbons",
        "phone": "+1 (555) 010-9999",
        "signed_up_at": CREATED_AT,
        "last_request_at": EVENT_TIME,
        "custom_attributes": {
            "plan": "premium",
            "logins": 5,
            "address_city": "San Francisco",
            "address_country": "US",
            "address_postalCode": "94107",
            "address_state": "CA",
            "address_street": "6th St",
        },
    }


def test_identify_builds_the_name_and_avatar_and_attaches_the_traits_company():
    event = spec_events.identify()
    del event["traits"]["name"]
    event["traits"].update(
        avatar="https://shop.example/peter.png",
        unsubscribedFromEmails=True,
        company={"id": "acme-1", "name": "Acme", "plan": "gold"},
        tags=["vip"],
        trial_ends_at="2026-12-01T00:00:00Z",
        bio="x" * 300,
    )
    _, body = single_request(event)
    assert body["name"] == "Peter Gibbons"
    assert body["avatar"] == {"type": "avatar", "image_url": "https://shop.example/peter.png"}
    assert body["unsubscribed_from_emails"] is True
    assert body["companies"] == [{"company_id": "acme-1", "name": "Acme", "plan": "gold"}]
    custom = body["custom_attributes"]
    assert "tags" not in custom and "company" not in custom
    assert custom["trial_ends_at"] == int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    assert custom["bio"] == "x" * 255


def test_attribute_names_lose_dots_and_dollars():
    event = spec_events.identify()
    event["traits"] = {"email": EMAIL, "utm.source": "news", "$price": 3}
    _, body = single_request(event)
    assert body["custom_attributes"] == {"utm_source": "news", "_price": 3}


def test_identify_of_an_inactive_context_does_not_mark_the_user_seen():
    event = spec_events.identify()
    event["context"]["active"] = False
    _, body = single_request(event)
    assert "last_request_at" not in body


def test_identify_by_email_only_and_without_identity():
    event = spec_events.identify()
    del event["userId"]
    _, body = single_request(event)
    assert (body.get("user_id"), body["email"]) == (None, EMAIL)
    del event["traits"]["email"]
    with pytest.raises(Skip, match=r"userId or traits\.email"):
        destination.translate(event, settings())


TRACKS = [
    spec_events.product_viewed,
    spec_events.product_added,
    spec_events.products_searched,
    spec_events.signed_up,
]


@pytest.mark.parametrize("make", TRACKS, ids=lambda make: make.__name__)
def test_events_without_revenue_carry_their_first_ten_scalar_properties(make):
    event = make()
    url, body = single_request(event)
    assert url == EVENTS
    scalars = {key: value for key, value in event["properties"].items() if key not in ("currency",)}
    assert body == {
        "event_name": event["event"],
        "created_at": EVENT_TIME,
        "user_id": USER,
        "metadata": dict(list(scalars.items())[:10]),
    }


def test_order_completed_puts_the_revenue_in_cents_first():
    _, body = single_request(spec_events.order_completed())
    assert body == {
        "event_name": "Order Completed",
        "created_at": EVENT_TIME,
        "user_id": USER,
        "metadata": {
            "price": {"amount": 2500, "currency": "USD"},
            "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
            "order_id": "50314b8e9bcf000000000000",
            "affiliation": "Google Store",
            "total": 27.5,
            "subtotal": 22.5,
            "shipping": 3,
            "tax": 2,
            "discount": 2.5,
            "coupon": "hasbros",
        },
    }


def test_checkout_started_drops_the_products_list():
    _, body = single_request(spec_events.checkout_started())
    assert body["metadata"] == {
        "price": {"amount": 2500, "currency": "USD"},
        "order_id": "50314b8e9bcf000000000000",
        "value": 30,
        "shipping": 3,
        "tax": 2,
        "discount": 2.5,
        "coupon": "hasbros",
    }


def test_appendix_a6_track_golden_translation():
    event = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u123",
        "anonymousId": "a-1",
        "messageId": "m-1",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "context": {"traits": {"email": "jane.doe@example.com"}},
        "properties": {
            "order_id": "o-9",
            "total": 30,
            "revenue": 25,
            "currency": "USD",
            "products": [
                {"product_id": "p1", "name": "Mug", "price": 10, "quantity": 2, "category": "kitchen"}
            ],
        },
    }
    _, body = single_request(event)
    assert body == {
        "event_name": "Order Completed",
        "created_at": 1714564800,
        "user_id": "u123",
        "metadata": {"price": {"amount": 2500, "currency": "USD"}, "order_id": "o-9", "total": 30},
    }


def test_event_metadata_dates_and_nested_objects_are_flattened():
    event = spec_events.signed_up()
    event["properties"] = {
        "renewal_date": "2027-01-15T00:00:00Z",
        "billing": {"cycle": "yearly", "next_at": "2026-12-01"},
        "email": "not metadata",
    }
    _, body = single_request(event)
    assert body["metadata"] == {
        "renewal_date": int(datetime(2027, 1, 15, tzinfo=UTC).timestamp()),
        "billing_cycle": "yearly",
        "billing_next_at": int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()),
    }


def test_anonymous_events_use_the_email_or_are_skipped():
    event = spec_events.signed_up()
    del event["userId"]
    _, body = single_request(event)
    assert (body["email"], "user_id" in body) == (EMAIL, False)
    event["context"]["traits"] = {}
    with pytest.raises(Skip, match="userId or email"):
        destination.translate(event, settings())


def test_group_attaches_the_user_to_the_company():
    url, body = single_request(spec_events.group())
    assert url == USERS
    assert body == {
        "user_id": USER,
        "email": EMAIL,
        "companies": [
            {
                "company_id": "0e8c78ea9d97a7b8185e8632",
                "name": "Initech",
                "industry": "Technology",
                "size": 329,
                "plan": "enterprise",
                "website": "https://initech.example",
            }
        ],
    }


def test_group_sends_spend_creation_date_and_custom_attributes():
    event = spec_events.group()
    event["traits"].update(monthly_spend=99.5, createdAt="2026-01-15T09:30:00Z", region={"name": "EMEA"})
    _, body = single_request(event)
    [company] = body["companies"]
    assert (company["monthly_spend"], company["remote_created_at"], company["custom_attributes"]) == (
        99.5,
        CREATED_AT,
        {"region_name": "EMEA"},
    )


def test_group_without_a_user_is_skipped():
    event = spec_events.group()
    del event["userId"]
    event["context"]["traits"] = {}
    with pytest.raises(Skip, match="attaches companies to a user"):
        destination.translate(event, settings())


@pytest.mark.parametrize("make", [spec_events.page, spec_events.screen, spec_events.alias])
def test_page_screen_and_alias_are_not_taken(make):
    with pytest.raises(Skip, match="Intercom does not take"):
        destination.translate(make(), settings())


# -- hosts, version, settings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("us", "https://api.intercom.io"),
        ("eu", "https://api.eu.intercom.io"),
        ("au", "https://api.au.intercom.io"),
    ],
)
def test_regions_choose_the_host(region, host):
    [request] = render(destination, settings(region=region), [spec_events.signed_up()])
    assert request.url == f"{host}/events"


def test_base_url_and_version_header_are_settings():
    [request] = render(
        destination, settings(base_url="http://127.0.0.1:9/", api_version="1.3"), [spec_events.signed_up()]
    )
    assert (request.url, request.header("Intercom-Version")) == ("http://127.0.0.1:9/events", "1.3")


def test_missing_token_and_unknown_region_are_named():
    with pytest.raises(SettingsError, match="'access_token'"):
        parse_settings(IntercomSettings, {}, "intercom")
    with pytest.raises(SettingsError, match="'region' must be one of us, eu, au"):
        settings(region="ap")


def test_the_token_is_secret_and_the_region_a_choice():
    schema = {spec.name: spec for spec in settings_schema(IntercomSettings)}
    assert schema["access_token"].secret
    assert (schema["region"].type, schema["api_version"].default) == ("choice", "1.4")


def test_2500_events_are_2500_requests():
    events = []
    for index in range(2_500):
        event = spec_events.signed_up()
        event["messageId"] = f"m-{index}"
        event["properties"] = {"index": index}
        events.append(event)
    requests = render(destination, settings(), events)
    assert len(requests) == 2_500
    assert [orjson.loads(request.body)["metadata"]["index"] for request in requests] == list(range(2_500))


# -- classification ----------------------------------------------------------------------


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {})
    return Response(status, headers or {}, raw)


EVENT_REQUEST = render(destination, settings(), [spec_events.signed_up()])[0]
USER_REQUEST: Request = render(destination, settings(), [spec_events.identify()])[0]


def error_list(code: str, message: str) -> dict[str, Any]:
    return {
        "type": "error.list",
        "request_id": "000on3o1n0j4vu2d5i1g",
        "errors": [{"code": code, "message": message}],
    }


@pytest.mark.parametrize(("status", "request_"), [(200, USER_REQUEST), (202, EVENT_REQUEST)])
def test_success_is_delivered(status, request_):
    assert destination.classify(respond(status, b""), request_, 1) == Outcome.delivered(f"HTTP {status}")


def test_409_conflict_is_retried():
    body = error_list("conflict", "A user matching those details already exists")
    assert destination.classify(respond(409, body), USER_REQUEST, 1).verdict is Verdict.RETRY


def test_404_on_events_is_retried_but_not_on_users():
    body = error_list("not_found", "User Not Found")
    assert destination.classify(respond(404, body), EVENT_REQUEST, 1).verdict is Verdict.RETRY
    assert destination.classify(respond(404, body), USER_REQUEST, 1).verdict is Verdict.GIVE_UP


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "parameter_invalid", "Invalid custom attribute"),
        (401, "unauthorized", "Access Token Invalid"),
        (403, "forbidden", "You do not have permission"),
        (422, "unprocessable_entity", "Custom attribute is not valid"),
    ],
)
def test_client_errors_give_up_with_intercoms_error_list(status, code, message):
    outcome = destination.classify(respond(status, error_list(code, message)), USER_REQUEST, 1)
    assert outcome.verdict is Verdict.GIVE_UP and message in outcome.reason


def test_429_waits_until_the_rate_limit_reset_moment():
    reset = int(datetime.now(UTC).timestamp()) + 7
    headers = {"x-ratelimit-limit": "1666", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    outcome = destination.classify(
        respond(429, error_list("rate_limit_exceeded", "Exceeded rate limit"), headers), EVENT_REQUEST, 1
    )
    assert outcome.verdict is Verdict.RETRY and 5 <= (outcome.retry_after or 0) <= 7


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(status):
    assert destination.classify(respond(status, b"oops"), EVENT_REQUEST, 1).verdict is Verdict.RETRY
