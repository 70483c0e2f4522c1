"""HubSpot: Spec events → exact v3 batch requests, batching, response classification, settings."""

from __future__ import annotations

import uuid
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
from trackyard.destinations.hubspot import HubSpotSettings, destination, property_value

TOKEN, HUB_ID = "pat-na1-11111111-2222-3333-4444-555555555555", "20412345"
HEADERS = (("Content-Type", "application/json"), ("Authorization", f"Bearer {TOKEN}"))
CONTACTS = "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
COMPANIES = "https://api.hubapi.com/crm/v3/objects/companies/batch/upsert"
EVENTS = "https://api.hubapi.com/events/v3/send/batch"
EMAIL = "peter@example.com"
OCCURRED_AT = "2026-11-28T10:00:05.180Z"
CREATED_AT_MS = "1768469400000"  # 2026-01-15T09:30:00Z
NAMESPACE = uuid.UUID("8d3b6f0e-5a0c-4f8e-9d43-2b8f1d6c7a51")


def settings(**overrides: Any) -> HubSpotSettings:
    return parse_settings(HubSpotSettings, {"access_token": TOKEN, "hub_id": HUB_ID, **overrides})


def inputs_of(request: Request) -> list[dict[str, Any]]:
    body = orjson.loads(request.body)
    assert list(body) == ["inputs"]
    return body["inputs"]


def single_request(event: dict[str, Any], **overrides: Any) -> tuple[str, dict[str, Any]]:
    [request] = render(destination, settings(**overrides), [event])
    assert (request.method, request.headers) == ("POST", HEADERS)
    [item] = inputs_of(request)
    return request.url, item


def product_properties(product: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in product.items()}


def midnight_ms(year: int, month: int, day: int) -> str:
    return str(int(datetime(year, month, day, tzinfo=UTC).timestamp()) * 1000)


def occurrence_id(message_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, message_id))


# -- translation -------------------------------------------------------------------------


def test_the_destination_is_in_the_catalog_under_segments_name():
    found = registry.get("hubspot")
    assert (found.name, str(found.category), found.dedupe_field, found.opt_in) == (
        "HubSpot",
        "crm",
        "uuid",
        False,
    )


def test_identify_upserts_the_contact_by_email_with_standard_properties():
    url, item = single_request(spec_events.identify())
    assert url == CONTACTS
    assert item == {
        "idProperty": "email",
        "id": EMAIL,
        "objectWriteTraceId": "0",
        "properties": {
            "email": EMAIL,
            "firstname": "Peter",
            "lastname": "Gibbons",
            "phone": "+1 (555) 010-9999",
            "address": "6th St",
            "city": "San Francisco",
            "state": "CA",
            "country": "US",
            "zip": "94107",
        },
    }


def test_appendix_a5_identify_golden_translation():
    event = {
        "type": "identify",
        "userId": "u123",
        "anonymousId": "a-1",
        "messageId": "m-2",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "traits": {
            "email": "jane.doe@example.com",
            "firstName": "Jane",
            "lastName": "Doe",
            "phone": "+15551234567",
            "plan": "pro",
            "createdAt": "2024-01-01T00:00:00Z",
            "address": {"city": "New York", "postal_code": "10001", "country": "US"},
        },
    }
    _, item = single_request(event)
    assert item["properties"] == {
        "firstname": "Jane",
        "lastname": "Doe",
        "phone": "+15551234567",
        "city": "New York",
        "country": "US",
        "zip": "10001",
        "email": "jane.doe@example.com",
    }


def test_mapped_traits_become_custom_properties_with_dates_in_epoch_ms():
    event = spec_events.identify()
    event["traits"]["trial_ends"] = "2026-12-01"
    event["traits"]["renewal"] = "2027-01-15T18:45:00Z"
    _, item = single_request(
        event,
        contact_properties="plan: plan; logins: login_count; createdAt: signup_date; "
        "trial_ends: trial_end_date; renewal: renewal_day",
        date_properties="renewal_day",
    )
    assert {key: item["properties"][key] for key in ("plan", "login_count", "signup_date")} == {
        "plan": "premium",
        "login_count": "5",
        "signup_date": CREATED_AT_MS,  # a datetime: epoch ms as is
    }
    assert item["properties"]["trial_end_date"] == midnight_ms(2026, 12, 1)
    assert item["properties"]["renewal_day"] == midnight_ms(
        2027, 1, 15
    )  # a date property: the time is dropped


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (5, "5"),
        (18.99, "18.99"),
        ("  padded  ", "padded"),
        (["a", "b", {"c": 1}], 'a;b;{"c":1}'),
        ({"nested": True}, '{"nested":true}'),
        ("2026-01-15T09:30:00.000Z", CREATED_AT_MS),
        ("2026-01-15T11:30:00+02:00", CREATED_AT_MS),
        ("2026-01-15", midnight_ms(2026, 1, 15)),
        ("not a 2026-01-15 date", "not a 2026-01-15 date"),
    ],
)
def test_property_values_are_strings_as_hubspot_takes_them(value, expected):
    assert property_value(value) == expected


def test_identify_falls_back_to_the_context_email_and_normalises_it():
    event = spec_events.identify()
    del event["traits"]["email"]
    event["context"]["traits"]["email"] = "  Peter@Example.COM "
    _, item = single_request(event)
    assert (item["id"], item["properties"]["email"]) == (EMAIL, EMAIL)


@pytest.mark.parametrize("email", [None, "", "peter", "peter@localhost"])
def test_identify_without_a_valid_email_is_skipped(email):
    event = spec_events.identify()
    event["traits"]["email"] = email
    event["context"]["traits"] = {}
    with pytest.raises(Skip, match=r"traits\.email"):
        destination.translate(event, settings())


def test_lifecycle_stage_and_company_name_are_sent():
    event = spec_events.identify()
    event["traits"].update(lifecycle_stage="Customer", company={"name": "Initech", "id": "c1"})
    _, item = single_request(event)
    assert (item["properties"]["lifecyclestage"], item["properties"]["company"]) == ("customer", "Initech")


TRACKS = [
    spec_events.product_viewed,
    spec_events.product_added,
    spec_events.checkout_started,
    spec_events.order_completed,
    spec_events.products_searched,
    spec_events.signed_up,
]
EVENT_NAMES = {
    "Product Viewed": "pe20412345_product_viewed",
    "Product Added": "pe20412345_product_added",
    "Checkout Started": "pe20412345_checkout_started",
    "Order Completed": "pe20412345_order_completed",
    "Products Searched": "pe20412345_products_searched",
    "Signed Up": "pe20412345_signed_up",
}


def joined_products(products: list[dict[str, Any]]) -> str:
    return ";".join(orjson.dumps(product).decode() for product in products)


def expected_event_properties(properties: dict[str, Any]) -> dict[str, str]:
    expected = {}
    for key, value in properties.items():
        if key == "products":
            expected[key] = joined_products(value)
        elif isinstance(value, bool):
            expected[key] = str(value).lower()
        else:
            expected[key] = str(value)
    return expected


@pytest.mark.parametrize("make", TRACKS, ids=lambda make: make.__name__)
def test_every_ecommerce_event_becomes_a_custom_behavioral_event(make):
    event = make()
    url, item = single_request(event)
    assert url == EVENTS
    assert item == {
        "eventName": EVENT_NAMES[event["event"]],
        "occurredAt": OCCURRED_AT,
        "email": EMAIL,
        "uuid": occurrence_id(event["messageId"]),
        "properties": expected_event_properties(event["properties"]),
    }


def test_order_completed_properties_exactly():
    _, item = single_request(spec_events.order_completed())
    assert item["properties"] == {
        "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
        "order_id": "50314b8e9bcf000000000000",
        "affiliation": "Google Store",
        "total": "27.5",
        "subtotal": "22.5",
        "revenue": "25.0",
        "shipping": "3",
        "tax": "2",
        "discount": "2.5",
        "coupon": "hasbros",
        "currency": "USD",
        "products": joined_products(spec_events.PRODUCTS),
    }


def test_occurrence_ids_are_stable_uuid5_of_the_message_id():
    _, item = single_request(spec_events.signed_up())
    assert item["uuid"] == occurrence_id("ajs-next-1764324000000-su-0007")
    assert uuid.UUID(item["uuid"]).version == 5


def test_event_properties_are_flattened_to_hubspot_names_and_capped_at_50():
    event = spec_events.signed_up()
    event["properties"] = {
        "Plan Name": "pro",
        "billing": {"cycle": "yearly", "Seats.Count": 3},
        "9lives": "cat",
        **{f"p{index}": index for index in range(60)},
    }
    _, item = single_request(event)
    properties = item["properties"]
    assert list(properties)[:4] == ["plan_name", "billing_cycle", "billing_seats_count", "lives"]
    assert properties["billing_seats_count"] == "3" and len(properties) == 50


def test_a_fully_qualified_event_name_passes_unchanged():
    event = spec_events.track("pe20412345_clicked_cta", {}, "m-fq")
    _, item = single_request(event)
    assert item["eventName"] == "pe20412345_clicked_cta"


def test_event_names_keep_only_hubspot_characters():
    event = spec_events.track("Video.Played (HD)!", {}, "m-name")
    _, item = single_request(event)
    assert item["eventName"] == "pe20412345_video_played_hd"


def test_track_without_hub_id_is_skipped_with_the_reason():
    with pytest.raises(Skip, match="Hub ID"):
        destination.translate(spec_events.signed_up(), settings(hub_id=""))


def test_track_email_comes_from_properties_before_context_and_is_required():
    event = spec_events.signed_up()
    event["properties"]["email"] = "Other@Example.com"
    _, item = single_request(event)
    assert item["email"] == "other@example.com"
    del event["properties"]["email"]
    event["context"]["traits"] = {}
    with pytest.raises(Skip, match="email"):
        destination.translate(event, settings())


def test_group_upserts_the_company_by_segment_group_id():
    url, item = single_request(spec_events.group())
    assert url == COMPANIES
    assert item == {
        "idProperty": "segment_group_id",
        "id": "0e8c78ea9d97a7b8185e8632",
        "objectWriteTraceId": "0",
        "properties": {
            "name": "Initech",
            "numberofemployees": "329",
            "domain": "initech.example",
            "segment_group_id": "0e8c78ea9d97a7b8185e8632",
        },
    }


def test_group_sends_industry_only_as_a_hubspot_option_value():
    event = spec_events.group()
    event["traits"].update(industry="COMPUTER_SOFTWARE", website="www.initech.example/about")
    _, item = single_request(event, company_id_property="external_key", company_properties="plan: plan_tier")
    assert item["idProperty"] == "external_key"
    assert item["properties"] == {
        "name": "Initech",
        "numberofemployees": "329",
        "industry": "COMPUTER_SOFTWARE",
        "domain": "initech.example",
        "plan_tier": "enterprise",
        "external_key": "0e8c78ea9d97a7b8185e8632",
    }


def test_group_without_group_id_is_skipped():
    event = spec_events.group()
    del event["groupId"]
    with pytest.raises(Skip, match="groupId"):
        destination.translate(event, settings())


@pytest.mark.parametrize("make", [spec_events.page, spec_events.screen, spec_events.alias])
def test_page_screen_and_alias_are_not_taken(make):
    with pytest.raises(Skip, match="HubSpot does not take"):
        destination.translate(make(), settings())


def test_the_scenario_is_one_request_per_endpoint():
    events = [event for event in spec_events.scenario() if event["type"] in ("identify", "track", "group")]
    requests = render(destination, settings(), events)
    assert [(request.url, len(inputs_of(request))) for request in requests] == [
        (CONTACTS, 1),
        (EVENTS, 6),
        (COMPANIES, 1),
    ]


def test_base_url_overrides_the_host():
    [request] = render(destination, settings(base_url="http://127.0.0.1:9/"), [spec_events.identify()])
    assert request.url == "http://127.0.0.1:9/crm/v3/objects/contacts/batch/upsert"


# -- batching ----------------------------------------------------------------------------


def identify_for(email: str, **traits: Any) -> dict[str, Any]:
    event = spec_events.identify()
    event["traits"] = {"email": email, **traits}
    return event


def test_2500_identifies_are_cut_into_batches_of_100():
    events = [identify_for(f"user{index}@example.com") for index in range(2_500)]
    requests = render(destination, settings(), events)
    assert [len(inputs_of(request)) for request in requests] == [100] * 25
    assert [item["id"] for request in requests for item in inputs_of(request)] == [
        f"user{index}@example.com" for index in range(2_500)
    ]
    assert {item["objectWriteTraceId"] for item in inputs_of(requests[3])} == {str(i) for i in range(100)}


def test_2500_tracks_are_cut_into_batches_of_100():
    events = []
    for index in range(2_500):
        event = spec_events.signed_up()
        event["messageId"] = f"m-{index}"
        events.append(event)
    requests = render(destination, settings(), events)
    assert [len(inputs_of(request)) for request in requests] == [100] * 25
    assert inputs_of(requests[-1])[-1]["uuid"] == occurrence_id("m-2499")


def test_identifies_of_one_email_in_a_batch_are_merged_and_traced():
    events = [
        identify_for(EMAIL, firstName="Pete", lastName="G"),
        identify_for("other@example.com", firstName="Other"),
        identify_for("PETER@example.com", lastName="Gibbons"),
    ]
    [request] = render(destination, settings(), events)
    assert inputs_of(request) == [
        {
            "idProperty": "email",
            "id": EMAIL,
            "objectWriteTraceId": "0,2",
            "properties": {"firstname": "Pete", "lastname": "Gibbons", "email": EMAIL},
        },
        {
            "idProperty": "email",
            "id": "other@example.com",
            "objectWriteTraceId": "1",
            "properties": {"firstname": "Other", "email": "other@example.com"},
        },
    ]


# -- classification ----------------------------------------------------------------------


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {})
    return Response(status, headers or {}, raw)


MERGED = render(
    destination,
    settings(),
    [
        identify_for(EMAIL),
        identify_for("bad@example.com"),
        identify_for(EMAIL),
        identify_for("ok@example.com"),
    ],
)[0]
EVENT_BATCH = render(destination, settings(), [spec_events.signed_up(), spec_events.products_searched()])[0]


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_delivers_the_batch(status):
    assert destination.classify(respond(status), MERGED, 4) == Outcome.delivered(f"HTTP {status}")


def test_207_gives_up_only_the_inputs_named_by_trace_id():
    body = {
        "status": "COMPLETE",
        "results": [],
        "numErrors": 1,
        "errors": [
            {
                "status": "error",
                "category": "VALIDATION_ERROR",
                "message": "Property values were not valid: INVALID_EMAIL",
                "context": {"objectWriteTraceId": ["1"]},
            }
        ],
    }
    assert destination.classify(respond(207, body), MERGED, 4) == [
        Outcome.delivered("HTTP 207"),
        Outcome.give_up("HTTP 207: VALIDATION_ERROR: Property values were not valid: INVALID_EMAIL"),
        Outcome.delivered("HTTP 207"),
        Outcome.delivered("HTTP 207"),
    ]


def test_207_naming_a_merged_input_by_id_gives_up_every_payload_it_carries():
    body = {
        "status": "COMPLETE",
        "errors": [{"category": "CONFLICT", "message": "no", "context": {"ids": [EMAIL]}}],
    }
    outcomes = destination.classify(respond(207, body), MERGED, 4)
    assert [outcome.verdict for outcome in outcomes] == [
        Verdict.GIVE_UP,
        Verdict.DELIVERED,
        Verdict.GIVE_UP,
        Verdict.DELIVERED,
    ]


def test_event_errors_are_traced_by_occurrence_uuid():
    failed = occurrence_id("ajs-next-1764324000000-ps-0006")
    body = {
        "status": "COMPLETE",
        "errors": [{"category": "VALIDATION_ERROR", "message": "x", "context": {"uuid": [failed]}}],
    }
    outcomes = destination.classify(respond(207, body), EVENT_BATCH, 2)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.DELIVERED, Verdict.GIVE_UP]


def test_400_naming_inputs_gives_those_up_and_retries_the_others():
    body = {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": "Property values were not valid",
        "context": {"objectWriteTraceId": ["1"]},
    }
    outcomes = destination.classify(respond(400, body), MERGED, 4)
    assert [outcome.verdict for outcome in outcomes] == [
        Verdict.RETRY,
        Verdict.GIVE_UP,
        Verdict.RETRY,
        Verdict.RETRY,
    ]
    assert outcomes[1].reason == "HTTP 400: VALIDATION_ERROR: Property values were not valid"


def test_400_naming_no_input_gives_up_the_whole_batch():
    body = {"status": "error", "category": "VALIDATION_ERROR", "message": 'Property "plan" does not exist'}
    outcome = destination.classify(respond(400, body), MERGED, 4)
    assert outcome.verdict is Verdict.GIVE_UP and 'Property \\"plan\\" does not exist' in outcome.reason


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            401,
            {
                "status": "error",
                "message": "Authentication credentials not found.",
                "category": "INVALID_AUTHENTICATION",
            },
        ),
        (
            403,
            {
                "status": "error",
                "message": "This app hasn't been granted all required scopes",
                "category": "MISSING_SCOPES",
            },
        ),
        (404, {"status": "error", "message": "Event definition not found", "category": "OBJECT_NOT_FOUND"}),
    ],
)
def test_auth_scope_and_missing_definitions_give_up_with_the_body(status, body):
    outcome = destination.classify(respond(status, body), EVENT_BATCH, 2)
    assert outcome.verdict is Verdict.GIVE_UP and body["message"] in outcome.reason


def test_429_ten_secondly_waits_for_the_policy_window():
    body = {
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "policyName": "TEN_SECONDLY_ROLLING",
    }
    headers = {
        "x-hubspot-ratelimit-interval-milliseconds": "10000",
        "x-hubspot-ratelimit-max": "100",
        "x-hubspot-ratelimit-remaining": "0",
    }
    outcome = destination.classify(respond(429, body, headers), EVENT_BATCH, 2)
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 10.0)


def test_429_honours_retry_after_first():
    outcome = destination.classify(
        respond(429, {"policyName": "TEN_SECONDLY_ROLLING"}, {"retry-after": "3"}), EVENT_BATCH, 2
    )
    assert outcome.retry_after == 3.0


def test_429_secondly_search_limit_waits_one_second_and_daily_ten_minutes():
    secondly = destination.classify(respond(429, {"policyName": "SECONDLY"}), EVENT_BATCH, 2)
    daily = destination.classify(
        respond(429, {"policyName": "DAILY"}, {"x-hubspot-ratelimit-daily-remaining": "0"}), EVENT_BATCH, 2
    )
    assert (secondly.retry_after, daily.retry_after) == (1.0, 600.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(status):
    assert destination.classify(respond(status, b"upstream"), EVENT_BATCH, 2).verdict is Verdict.RETRY


# -- settings ----------------------------------------------------------------------------


def test_missing_access_token_is_named():
    with pytest.raises(SettingsError, match="'access_token'"):
        parse_settings(HubSpotSettings, {"hub_id": HUB_ID}, "hubspot")


def test_the_access_token_is_secret_and_the_hub_id_optional():
    schema = {spec.name: spec for spec in settings_schema(HubSpotSettings)}
    assert schema["access_token"].secret and schema["access_token"].required
    assert not schema["hub_id"].required and not schema["hub_id"].secret
    assert schema["contact_properties"].type == "mapping" and schema["date_properties"].type == "list"
