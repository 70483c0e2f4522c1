"""Customer.io: Spec events → exact Track API v2 batch requests, batching, response classification."""

from __future__ import annotations

import base64
import copy
import hashlib
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
from trackyard.destinations.customerio import CustomerIOSettings, destination, event_ulid

SITE_ID, API_KEY = "site-1", "key-1"
AUTH = "Basic " + base64.b64encode(b"site-1:key-1").decode()
US_BATCH = "https://track.customer.io/api/v2/batch"
HEADERS = (("Content-Type", "application/json"), ("Authorization", AUTH))
USER, ANONYMOUS = "97980cfea0067", "507f191e810c19729de860ea"
EVENT_TIME = int(datetime(2026, 11, 28, 10, 0, 5, tzinfo=UTC).timestamp())  # timestamp, ms floored
CREATED_AT = int(datetime(2026, 1, 15, 9, 30, tzinfo=UTC).timestamp())


def settings(**overrides: Any) -> CustomerIOSettings:
    return parse_settings(CustomerIOSettings, {"site_id": SITE_ID, "api_key": API_KEY, **overrides})


def items_of(request: Request) -> list[dict[str, Any]]:
    body = orjson.loads(request.body)
    assert list(body) == ["batch"]
    return body["batch"]


def single_item(event: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    [request] = render(destination, settings(**overrides), [event])
    assert (request.method, request.url, request.headers) == ("POST", US_BATCH, HEADERS)
    [item] = items_of(request)
    return item


def independent_ulid(message_id: str) -> str:
    """The expected id, computed another way: 128 hash bits left-padded to 130, in 5-bit groups."""
    bits = "00" + format(int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:16], "big"), "0128b")
    return "".join("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[int(bits[i : i + 5], 2)] for i in range(0, 130, 5))


# -- translation -------------------------------------------------------------------------


def test_the_destination_is_in_the_catalog_under_segments_name():
    found = registry.get("customerio")
    assert (found.slug, found.name, found.dedupe_field) == ("customerio", "Customer.io", "id")


def test_identify_becomes_a_person_identify_with_unix_seconds_dates():
    assert single_item(spec_events.identify()) == {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": USER},
        "timestamp": EVENT_TIME,
        "attributes": {
            "email": "peter@example.com",
            "firstName": "Peter",
            "lastName": "Gibbons",
            "name": "Peter Gibbons",
            "phone": "+1 (555) 010-9999",
            "plan": "premium",
            "logins": 5,
            "address": {
                "city": "San Francisco",
                "country": "US",
                "postalCode": "94107",
                "state": "CA",
                "street": "6th St",
            },
            "created_at": CREATED_AT,
            "anonymous_id": ANONYMOUS,
        },
    }


ULIDS = {
    "Product Viewed": "0T7HVDNNAPX4PV9EVSR76JF9CC",
    "Product Added": "7EA8X22CW301EBM3G2CG9H207E",
    "Checkout Started": "0JZWFZHSPTQBPTG8CT6QNPB855",
    "Order Completed": "3FCRCJSNMASQQJ5X0XS8NFNAH4",
    "Products Searched": "237VFXHM9H7CPCFY5FJJ2VAQNC",
    "Signed Up": "1FAF34B0AXVT6Y6K3W099RN7PA",
}
TRACKS = [
    spec_events.product_viewed,
    spec_events.product_added,
    spec_events.checkout_started,
    spec_events.order_completed,
    spec_events.products_searched,
    spec_events.signed_up,
]


@pytest.mark.parametrize("make", TRACKS, ids=lambda make: make.__name__)
def test_every_ecommerce_event_becomes_a_person_event_with_its_properties(make):
    event = make()
    assert single_item(event) == {
        "type": "person",
        "action": "event",
        "identifiers": {"id": USER},
        "name": event["event"],
        "id": ULIDS[event["event"]],
        "timestamp": EVENT_TIME,
        "attributes": {**event["properties"], "anonymous_id": ANONYMOUS},
    }


def test_event_ids_are_ulids_derived_from_the_message_id():
    for message_id in ("ajs-next-1764324000000-oc-0002", "ios-0009", "ünïcode/💥"):
        assert event_ulid(message_id) == independent_ulid(message_id)
        assert event_ulid(message_id)[0] in "01234567" and len(event_ulid(message_id)) == 26
    assert event_ulid("01bx5zzkbkactav9wevgemmvry") == "01BX5ZZKBKACTAV9WEVGEMMVRY"  # already a ULID


def test_page_is_a_page_view_named_by_its_url():
    assert single_item(spec_events.page()) == {
        "type": "person",
        "action": "page",
        "identifiers": {"id": USER},
        "name": "https://shop.example/pricing",
        "id": "6TTRG1TBRYZAYTFEJ77RJY399H",
        "timestamp": EVENT_TIME,
        "attributes": {**spec_events.page()["properties"], "anonymous_id": ANONYMOUS},
    }


def test_page_without_properties_url_falls_back_to_the_context_page_url():
    event = spec_events.page()
    del event["properties"]["url"]
    assert single_item(event)["name"] == "https://shop.example/checkout?utm_source=newsletter"
    del event["context"]["page"]
    with pytest.raises(Skip, match=r"properties\.url"):
        destination.translate(event, settings())


def test_screen_is_a_screen_view_named_by_the_screen():
    assert single_item(spec_events.screen()) == {
        "type": "person",
        "action": "screen",
        "identifiers": {"id": USER},
        "name": "Home",
        "id": "2W1631YCR81T7Q9PXA43PK2D5K",
        "timestamp": EVENT_TIME,
        "attributes": {"variation": "blue", "anonymous_id": ANONYMOUS},
    }


def test_group_identifies_an_object_related_to_the_user():
    assert single_item(spec_events.group()) == {
        "type": "object",
        "action": "identify",
        "identifiers": {"object_type_id": "1", "object_id": "0e8c78ea9d97a7b8185e8632"},
        "attributes": {
            "name": "Initech",
            "industry": "Technology",
            "employees": 329,
            "plan": "enterprise",
            "website": "https://initech.example",
        },
        "cio_relationships": [{"identifiers": {"id": USER}}],
    }


def test_group_reads_segments_object_fields_when_given():
    event = spec_events.group()
    event["traits"] = {
        "objectTypeId": "2",
        "objectAttributes": {"name": "Initech", "renewal": "2027-01-01"},
        "relationshipAttributes": {"role": "admin", "since": "2026-01-15T09:30:00Z"},
        "createdAt": "2026-01-15T09:30:00.000Z",
        "ignored": "only objectAttributes are attributes when given",
    }
    assert single_item(event) == {
        "type": "object",
        "action": "identify",
        "identifiers": {"object_type_id": "2", "object_id": "0e8c78ea9d97a7b8185e8632"},
        "attributes": {
            "name": "Initech",
            "renewal": int(datetime(2027, 1, 1, tzinfo=UTC).timestamp()),
            "created_at": CREATED_AT,
        },
        "cio_relationships": [
            {"identifiers": {"id": USER}, "relationship_attributes": {"role": "admin", "since": CREATED_AT}}
        ],
    }


def test_anonymous_group_identifies_the_object_for_the_anonymous_person():
    event = spec_events.group()
    del event["userId"]
    item = single_item(event)
    assert (item["action"], item["cio_relationships"]) == (
        "identify_anonymous",
        [{"identifiers": {"anonymous_id": ANONYMOUS}}],
    )


def test_alias_merges_the_previous_person_into_the_user():
    assert single_item(spec_events.alias()) == {
        "type": "person",
        "action": "merge",
        "primary": {"id": USER},
        "secondary": {"id": ANONYMOUS},
    }


def test_alias_is_skipped_when_merging_is_switched_off():
    with pytest.raises(Skip, match="merge_on_alias"):
        destination.translate(spec_events.alias(), settings(merge_on_alias="false"))


def test_the_whole_scenario_is_one_batch_in_log_order():
    [request] = render(destination, settings(), spec_events.scenario())
    assert [(item["type"], item["action"], item.get("name")) for item in items_of(request)] == [
        ("person", "identify", None),
        ("person", "event", "Product Viewed"),
        ("person", "event", "Product Added"),
        ("person", "event", "Checkout Started"),
        ("person", "event", "Order Completed"),
        ("person", "event", "Products Searched"),
        ("person", "event", "Signed Up"),
        ("person", "page", "https://shop.example/pricing"),
        ("person", "screen", "Home"),
        ("object", "identify", None),
        ("person", "merge", None),
    ]


def test_an_anonymous_track_is_identified_by_its_anonymous_id():
    event = spec_events.signed_up()
    del event["userId"]
    item = single_item(event)
    assert (item["identifiers"], item["attributes"]) == (
        {"anonymous_id": ANONYMOUS},
        {"plan": "pro", "trial": True, "seats": 3},
    )


@pytest.mark.parametrize(
    ("user_id", "identifiers"),
    [
        ("cio_03000001", {"cio_id": "03000001"}),
        ("peter@example.com", {"email": "peter@example.com"}),
        ("user/1 ü?#", {"id": "user/1 ü?#"}),  # v2 carries ids in JSON: nothing to URL-encode
    ],
)
def test_person_ids_resolve_like_segment(user_id, identifiers):
    event = spec_events.signed_up()
    event["userId"] = user_id
    assert single_item(event)["identifiers"] == identifiers


def test_identify_without_user_id_uses_the_email():
    event = spec_events.identify()
    del event["userId"]
    item = single_item(event)
    assert (item["identifiers"], item["attributes"]["anonymous_id"]) == (
        {"email": "peter@example.com"},
        ANONYMOUS,
    )


def test_identify_without_user_id_or_email_is_skipped():
    event = spec_events.identify()
    del event["userId"]
    del event["traits"]["email"]
    with pytest.raises(Skip, match=r"userId or traits\.email"):
        destination.translate(event, settings())


def test_events_without_any_identity_are_skipped():
    event = spec_events.signed_up()
    del event["userId"], event["anonymousId"]
    with pytest.raises(Skip, match="neither userId nor anonymousId"):
        destination.translate(event, settings())


def test_iso_dates_in_attributes_become_unix_seconds_except_in_arrays():
    event = spec_events.signed_up()
    event["properties"] = {
        "trial_ends": "2026-12-01T00:00:00Z",
        "day": "2026-12-01",
        "offset": "2026-12-01T01:00:00+01:00",
        "nested": {"at": "2026-12-01T00:00:00.123456789Z"},
        "listed": ["2026-12-01T00:00:00Z"],
        "not_a_date": "2026-12-01 maybe",
        "digits": "1764547200",
    }
    first_of_december = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    assert single_item(event)["attributes"] == {
        "trial_ends": first_of_december,
        "day": first_of_december,
        "offset": first_of_december,
        "nested": {"at": first_of_december},
        "listed": ["2026-12-01T00:00:00Z"],
        "not_a_date": "2026-12-01 maybe",
        "digits": "1764547200",
        "anonymous_id": ANONYMOUS,
    }


def test_attribute_dates_stay_strings_when_conversion_is_off_but_timestamps_do_not():
    event = spec_events.signed_up()
    event["properties"] = {"trial_ends": "2026-12-01T00:00:00Z"}
    item = single_item(event, convert_timestamps="false")
    assert (item["attributes"]["trial_ends"], item["timestamp"]) == ("2026-12-01T00:00:00Z", EVENT_TIME)


def test_identify_links_the_person_to_the_object_named_in_traits():
    event = spec_events.identify()
    event["traits"].update(objectId="acme", objectTypeId="3", relationshipAttributes={"role": "owner"})
    item = single_item(event)
    assert item["cio_relationships"] == [
        {
            "identifiers": {"object_type_id": "3", "object_id": "acme"},
            "relationship_attributes": {"role": "owner"},
        }
    ]
    assert {"objectTypeId", "relationshipAttributes", "createdAt"}.isdisjoint(item["attributes"])


def test_application_opened_with_a_device_token_also_upserts_the_device():
    event = spec_events.track("Application Opened", {"from_background": False}, "ios-0100")
    event["context"] = {
        "app": {"version": "3.2.1"},
        "device": {"token": "apns-token-1", "type": "ios"},
    }
    [request] = render(destination, settings(), [event])
    assert items_of(request) == [
        {
            "type": "person",
            "action": "event",
            "identifiers": {"id": USER},
            "name": "Application Opened",
            "id": independent_ulid("ios-0100"),
            "timestamp": EVENT_TIME,
            "attributes": {"from_background": False, "anonymous_id": ANONYMOUS},
        },
        {
            "type": "person",
            "action": "add_device",
            "identifiers": {"id": USER},
            "device": {
                "token": "apns-token-1",
                "platform": "ios",
                "last_used": EVENT_TIME,
                "attributes": {"from_background": False, "app_version": "3.2.1"},
            },
        },
    ]


def test_an_item_over_32_kb_is_skipped_with_the_reason():
    event = spec_events.signed_up()
    event["properties"] = {"blob": "x" * 40_000}
    with pytest.raises(Skip, match="at most 32000"):
        destination.translate(event, settings())


def test_page_screen_group_and_other_calls_are_all_taken():
    taken = {event["type"] for event in spec_events.scenario() if destination.translate(event, settings())}
    assert taken == {"identify", "track", "page", "screen", "group", "alias"}


# -- endpoints, regions, settings ----------------------------------------------------------


def test_eu_accounts_use_the_eu_host():
    [request] = render(destination, settings(region="eu"), [spec_events.signed_up()])
    assert request.url == "https://track-eu.customer.io/api/v2/batch"


def test_base_url_overrides_the_host():
    [request] = render(destination, settings(base_url="http://127.0.0.1:9/"), [spec_events.signed_up()])
    assert request.url == "http://127.0.0.1:9/api/v2/batch"


@pytest.mark.parametrize("missing", ["site_id", "api_key"])
def test_missing_credentials_are_named(missing):
    raw = {"site_id": SITE_ID, "api_key": API_KEY}
    del raw[missing]
    with pytest.raises(SettingsError, match=f"'{missing}'"):
        parse_settings(CustomerIOSettings, raw, "customerio")


def test_region_must_be_us_or_eu():
    with pytest.raises(SettingsError, match="'region' must be one of us, eu"):
        settings(region="ap")


def test_credentials_are_secret_and_region_is_a_choice():
    schema = {spec.name: spec for spec in settings_schema(CustomerIOSettings)}
    assert schema["site_id"].secret and schema["api_key"].secret
    assert (schema["region"].type, schema["region"].choices, schema["region"].default) == (
        "choice",
        ("us", "eu"),
        "us",
    )


# -- batching ----------------------------------------------------------------------------


def test_2500_events_are_cut_into_batches_of_100():
    events = []
    for index in range(2_500):
        event = spec_events.signed_up()
        event["messageId"] = f"m-{index}"
        events.append(event)
    requests = render(destination, settings(), events)
    assert [len(items_of(request)) for request in requests] == [100] * 25
    assert [item["id"] for request in requests for item in items_of(request)] == [
        independent_ulid(f"m-{index}") for index in range(2_500)
    ]


def test_large_events_are_cut_below_500_kb_per_request():
    events = []
    for index in range(120):
        event = spec_events.signed_up()
        event["properties"] = {"notes": "n" * 20_000, "index": index}
        events.append(event)
    requests = render(destination, settings(), events)
    assert all(len(request.body) <= 500_000 for request in requests)
    assert len(requests) == 5  # 24 items of ~20 KB fit under 500 KB
    assert [item["attributes"]["index"] for request in requests for item in items_of(request)] == list(
        range(120)
    )


# -- classification ----------------------------------------------------------------------


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {})
    return Response(status, headers or {}, raw)


REQUEST = render(destination, settings(), [spec_events.signed_up()])[0]


def test_200_delivers_the_batch():
    assert destination.classify(respond(200), REQUEST, 3) == Outcome.delivered("HTTP 200")


def test_207_gives_up_only_the_items_named_by_batch_index():
    body = {
        "errors": [
            {
                "batch_index": 1,
                "reason": "invalid",
                "field": "attributes.delivery_suburb",
                "message": "property value cannot be longer than 1000 bytes",
            },
            {"batch_index": 7},  # outside this batch: ignored
        ]
    }
    assert destination.classify(respond(207, body), REQUEST, 3) == [
        Outcome.delivered("HTTP 207"),
        Outcome.give_up(
            "HTTP 207: reason: invalid, field: attributes.delivery_suburb, "
            "message: property value cannot be longer than 1000 bytes"
        ),
        Outcome.delivered("HTTP 207"),
    ]


def test_400_naming_items_gives_those_up_and_retries_the_others():
    outcomes = destination.classify(
        respond(400, {"errors": [{"batch_index": 0, "reason": "bad"}]}), REQUEST, 2
    )
    assert [outcome.verdict for outcome in outcomes] == [Verdict.GIVE_UP, Verdict.RETRY]
    assert outcomes[0].reason == "HTTP 400: reason: bad"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"meta": {"error": "invalid json"}}),
        (401, {"meta": {"error": "Unauthorized request"}}),
        (403, {"meta": {"error": "forbidden"}}),
    ],
)
def test_other_client_errors_give_up_with_the_vendors_words(status, body):
    outcome = destination.classify(respond(status, body), REQUEST, 2)
    assert outcome.verdict == Verdict.GIVE_UP
    assert body["meta"]["error"] in outcome.reason and str(status) in outcome.reason


def test_429_is_retried_after_retry_after():
    outcome = destination.classify(respond(429, b"Too Many Requests", {"retry-after": "7"}), REQUEST, 2)
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 7.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(status):
    assert destination.classify(respond(status, b"oops"), REQUEST, 2).verdict == Verdict.RETRY


def test_events_are_not_changed_by_translation():
    events = spec_events.scenario()
    before = copy.deepcopy(events)
    render(destination, settings(), events)
    assert events == before
