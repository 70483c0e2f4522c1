"""SendGrid Marketing Campaigns: exact contact upserts, batching at 30,000 contacts, classification
of SendGrid's answers (per-contact errors, 429 with X-RateLimit-Reset), settings, and the Spec
scenario against a fake that checks SendGrid's documented contract. The differential test
against the official SDK is test_sendgrid_sdk.py.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
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
from trackyard.destinations.sendgrid import SendGridSettings, destination

API_KEY = "SG.Zm9vYmFy.c2VjcmV0LXNlbmRncmlkLWtleQ"
SETTINGS = parse_settings(SendGridSettings, {"api_key": API_KEY})
URL = "https://api.sendgrid.com/v3/marketing/contacts"
HEADERS = (("Content-Type", "application/json"), ("Authorization", f"Bearer {API_KEY}"))
PETER = {
    "email": "peter@example.com",
    "first_name": "Peter",
    "last_name": "Gibbons",
    "phone_number": "+1 (555) 010-9999",
    "address_line_1": "6th St",
    "city": "San Francisco",
    "state_province_region": "CA",
    "postal_code": "94107",
    "country": "US",
}


def settings(**overrides: str) -> SendGridSettings:
    return parse_settings(SendGridSettings, {"api_key": API_KEY, **overrides})


def only_request(event: dict[str, Any], config: SendGridSettings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def body_of(event: dict[str, Any], config: SendGridSettings = SETTINGS) -> dict[str, Any]:
    return orjson.loads(only_request(event, config).body)


def identify(email: str, **traits: Any) -> dict[str, Any]:
    event = spec_events.identify()
    event["traits"] = {"email": email, **traits}
    return event


# -- identify -------------------------------------------------------------------------------


def test_identify_upserts_a_contact_with_reserved_fields():
    request = only_request(spec_events.identify())
    assert (request.method, request.url, request.headers) == ("PUT", URL, HEADERS)
    assert orjson.loads(request.body) == {"contacts": [PETER]}


def test_list_ids_and_mapped_custom_fields_are_sent_by_type():
    config = settings(
        list_ids="ca7a3796-e8a8-4029-9ccb-df8937940562,b1",
        custom_fields="plan: e1_T; logins: e2_N; createdAt: e3_D; ghost: e4_T",
    )
    assert body_of(spec_events.identify(), config) == {
        "list_ids": ["ca7a3796-e8a8-4029-9ccb-df8937940562", "b1"],
        "contacts": [{**PETER, "custom_fields": {"e1_T": "premium", "e2_N": 5, "e3_D": "01/15/2026"}}],
    }


def test_custom_values_of_the_wrong_type_are_left_out():
    config = settings(custom_fields="plan: e2_N; logins: e1_T; signup: e3_D")
    contact = body_of(identify("p@example.com", plan="pro", logins=5, signup="soon"), config)["contacts"][0]
    assert contact == {"email": "p@example.com", "custom_fields": {"e1_T": "5"}}


def test_snake_case_traits_and_external_id_but_never_the_anonymous_id():
    event = identify(
        "p@example.com",
        first_name="Pete",
        last_name="G",
        external_id="crm-42",
        address={"line1": "1 Main St", "line2": "Apt 2", "postal_code": "10001"},
    )
    assert body_of(event)["contacts"] == [
        {
            "email": "p@example.com",
            "first_name": "Pete",
            "last_name": "G",
            "external_id": "crm-42",
            "address_line_1": "1 Main St",
            "address_line_2": "Apt 2",
            "postal_code": "10001",
        }
    ]


def test_an_identify_without_a_usable_email_is_skipped():
    event = spec_events.identify()
    del event["traits"]["email"]
    del event["context"]["traits"]
    with pytest.raises(Skip, match="keys contacts by email"):
        destination.translate(event, SETTINGS)
    with pytest.raises(Skip, match="whole request"):
        destination.translate(identify("not-an-email"), SETTINGS)


@pytest.mark.parametrize(
    "make",
    [
        spec_events.order_completed,
        spec_events.product_viewed,
        spec_events.page,
        spec_events.screen,
        spec_events.group,
        spec_events.alias,
    ],
    ids=lambda make: make.__name__,
)
def test_calls_other_than_identify_are_skipped_with_a_reason(make):
    with pytest.raises(Skip, match="only identify calls"):
        destination.translate(make(), SETTINGS)


# -- batching -------------------------------------------------------------------------------


def test_60001_contacts_are_cut_at_30000_per_request():
    events = [identify(f"user{index}@example.com") for index in range(60_001)]
    requests = render(destination, SETTINGS, events)
    contacts = [orjson.loads(request.body)["contacts"] for request in requests]
    assert [len(batch) for batch in contacts] == [30_000, 30_000, 1]
    assert contacts[2] == [{"email": "user60000@example.com"}]
    assert all(len(request.body) <= 6_000_000 for request in requests)


def test_large_contacts_are_cut_at_6_mb():
    bulky = "x" * 900
    config = settings(custom_fields="bio: e1_T")
    events = [identify(f"user{index}@example.com", bio=bulky) for index in range(7000)]
    requests = render(destination, config, events)
    assert len(requests) == 2
    assert all(len(request.body) <= 6_000_000 for request in requests)
    assert sum(len(orjson.loads(request.body)["contacts"]) for request in requests) == 7000


# -- classification -------------------------------------------------------------------------


def contacts_request(count: int = 3) -> Request:
    [request] = render(
        destination, SETTINGS, [identify(f"user{index}@example.com") for index in range(count)]
    )
    return request


def classify(status: int, body: Any, headers: dict[str, str] | None = None):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return destination.classify(Response(status, headers or {}, raw), contacts_request(), 3)


def test_an_accepted_job_is_delivered_with_its_id():
    outcome = classify(202, {"job_id": "2387e363-4104-4225-8960-4a5758492351"})
    assert (outcome.verdict, outcome.reason) == (
        Verdict.DELIVERED,
        "HTTP 202: job 2387e363-4104-4225-8960-4a5758492351 queued",
    )


def test_a_400_naming_contacts_gives_those_up_and_retries_the_others():
    body = {"errors": [{"field": "contacts[1].email", "message": "email is invalid"}]}
    outcomes = classify(400, body)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.RETRY, Verdict.GIVE_UP, Verdict.RETRY]
    assert (
        outcomes[1].reason == "HTTP 400: SendGrid rejected this contact: contacts[1].email: email is invalid"
    )


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "list_ids: list does not exist"), (401, "authorization required"), (403, "access forbidden")],
)
def test_other_client_errors_give_up_with_sendgrids_message(status, message):
    outcome = classify(status, {"errors": [{"field": None, "message": message}]})
    assert outcome.verdict is Verdict.GIVE_UP and message in outcome.reason


def test_a_429_waits_until_x_ratelimit_reset():
    reset = int(time.time()) + 30
    headers = {"x-ratelimit-limit": "150", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    outcome = classify(429, {"errors": [{"field": None, "message": "too many requests"}]}, headers)
    assert outcome.verdict is Verdict.RETRY
    assert 28 <= outcome.retry_after <= 30


def test_server_errors_are_retried_without_mistaking_the_window_reset_for_a_delay():
    outcome = classify(503, b"", {"x-ratelimit-reset": str(int(time.time()) + 3600)})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, None)
    assert classify(502, b"", {"retry-after": "4"}).retry_after == 4.0


# -- settings -------------------------------------------------------------------------------


def test_a_missing_api_key_is_named():
    with pytest.raises(SettingsError, match="'api_key'"):
        parse_settings(SendGridSettings, {"region": "eu"})


def test_the_api_key_is_secret_and_the_region_a_choice():
    schema = {spec.name: spec for spec in settings_schema(SendGridSettings)}
    assert schema["api_key"].secret and schema["api_key"].required
    assert schema["region"].choices == ("global", "eu")


def test_custom_field_ids_are_checked():
    with pytest.raises(SettingsError, match="custom field id"):
        settings(custom_fields="plan: Plan")


def test_the_eu_region_and_base_url_choose_the_host():
    assert only_request(spec_events.identify(), settings(region="eu")).url == (
        "https://api.eu.sendgrid.com/v3/marketing/contacts"
    )
    proxied = only_request(spec_events.identify(), settings(base_url="http://127.0.0.1:9/sg/"))
    assert proxied.url == "http://127.0.0.1:9/sg/v3/marketing/contacts"


def test_the_catalog_knows_it_by_segments_name():
    entry = registry.get("sendgrid")
    assert entry.name == "SendGrid Marketing Campaigns"
    assert entry.catalog_entry()["category"] == "email"
    assert entry.batching.max_events == 30_000


# -- the contract, played by a fake SendGrid ---------------------------------------------------

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
RESERVED = {
    "email",
    "phone_number_id",
    "external_id",
    "anonymous_id",
    "first_name",
    "last_name",
    "address_line_1",
    "address_line_2",
    "city",
    "state_province_region",
    "postal_code",
    "country",
    "phone_number",
    "whatsapp",
    "line",
    "facebook",
    "unique_name",
    "alternate_emails",
    "custom_fields",
}
DEFINED_FIELDS = {"e1_T": str, "e2_N": (int, float), "e3_D": str}
DATE = re.compile(r"^\d{2}/\d{2}/\d{4}$")


def contact_problems(index: int, contact: Any) -> list[dict[str, str]]:
    where = f"contacts[{index}]"
    if not isinstance(contact, dict):
        return [{"field": where, "message": "must be an object"}]
    problems = []
    if not EMAIL.match(str(contact.get("email", ""))):
        problems.append({"field": f"{where}.email", "message": "email is invalid"})
    problems += [
        {"field": f"{where}.{key}", "message": "is not a reserved field"}
        for key in contact
        if key not in RESERVED
    ]
    for field_id, value in (contact.get("custom_fields") or {}).items():
        expected = DEFINED_FIELDS.get(field_id)
        if expected is None:
            problems.append(
                {"field": f"{where}.custom_fields.{field_id}", "message": "custom field does not exist"}
            )
        elif (
            not isinstance(value, expected)
            or isinstance(value, bool)
            or (field_id.endswith("_D") and not DATE.match(value))
        ):
            problems.append(
                {"field": f"{where}.custom_fields.{field_id}", "message": "value has the wrong type"}
            )
    return problems


class SendGridContacts:
    """`PUT /v3/marketing/contacts` as documented: Bearer API key (401), 1 to 30,000 contacts
    and at most 6 MB (400/413), a valid email on each, only reserved fields and defined
    custom fields with values of their type, known list ids; any problem refuses the
    whole request with a 400 naming `contacts[<n>]`. Accepted requests answer 202 with a
    job id. Every answer carries the X-RateLimit headers. `refusals` keeps every non-2xx."""

    def __init__(self, api_key: str = API_KEY, list_ids: tuple[str, ...] = ("list-1",)) -> None:
        self.api_key, self.list_ids = api_key, set(list_ids)
        self.contacts: list[dict[str, Any]] = []
        self.refusals: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        status, answer = self.answer(request)
        with self.lock:
            if status >= 300:
                self.refusals.append((status, answer))
        limits = {
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "599",
            "X-RateLimit-Reset": str(int(time.time()) + 60),
        }
        return ok_json(answer, status, limits)

    def answer(self, request: Captured) -> tuple[int, dict[str, Any]]:
        if (request.method, request.path) != ("PUT", "/v3/marketing/contacts"):
            return 404, {"errors": [{"field": None, "message": "resource not found"}]}
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"errors": [{"field": None, "message": "authorization required"}]}
        if len(request.body) > 6_000_000:
            return 413, {"errors": [{"field": None, "message": "request too large"}]}
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return 400, {"errors": [{"field": None, "message": "invalid JSON"}]}
        contacts = body.get("contacts") if isinstance(body, dict) else None
        if not isinstance(contacts, list) or not 1 <= len(contacts) <= 30_000:
            return 400, {"errors": [{"field": "contacts", "message": "1 to 30,000 contacts are required"}]}
        problems = [
            problem for index, contact in enumerate(contacts) for problem in contact_problems(index, contact)
        ]
        problems += [
            {"field": "list_ids", "message": f"list {list_id} does not exist"}
            for list_id in body.get("list_ids", [])
            if list_id not in self.list_ids
        ]
        if problems:
            return 400, {"errors": problems}
        with self.lock:
            self.contacts.extend(contacts)
        return 202, {"job_id": str(uuid.uuid4())}


def send(request: Request) -> httpx.Response:
    return httpx.request(request.method, request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = SendGridContacts()
    with FakeVendor(contract) as vendor:
        config = settings(
            base_url=vendor.url, list_ids="list-1", custom_fields="plan: e1_T; logins: e2_N; createdAt: e3_D"
        )
        events = [event for event in spec_events.scenario() if event["type"] == "identify"]
        for request in render(destination, config, events):
            reply = send(request)
            assert reply.status_code == 202
            outcome = destination.classify(Response(202, {}, reply.content), request, 1)
            assert outcome.verdict is Verdict.DELIVERED and "job" in outcome.reason
    assert contract.refusals == []
    assert contract.contacts == [
        {**PETER, "custom_fields": {"e1_T": "premium", "e2_N": 5, "e3_D": "01/15/2026"}}
    ]


def test_the_fake_refuses_what_sendgrid_refuses():
    contract = SendGridContacts()
    with FakeVendor(contract) as vendor:
        good = only_request(spec_events.identify(), settings(base_url=vendor.url))
        wrong_key = Request(good.method, good.url, (HEADERS[0], ("Authorization", "Bearer nope")), good.body)
        assert send(wrong_key).status_code == 401
        too_many = Request(
            good.method, good.url, good.headers, orjson.dumps({"contacts": [{"email": "a@b.co"}] * 30_001})
        )
        assert send(too_many).status_code == 400
        too_large = Request(good.method, good.url, good.headers, orjson.dumps({"contacts": [PETER] * 30_000}))
        assert send(too_large).status_code == 413
        unknown_field = {**PETER, "custom_fields": {"e9_T": "x"}}
        mixed = Request(
            good.method,
            good.url,
            good.headers,
            orjson.dumps({"contacts": [PETER, {"email": "bad@"}, unknown_field]}),
        )
        reply = send(mixed)
        assert reply.json() == {
            "errors": [
                {"field": "contacts[1].email", "message": "email is invalid"},
                {"field": "contacts[2].custom_fields.e9_T", "message": "custom field does not exist"},
            ]
        }
        outcomes = destination.classify(Response(400, dict(reply.headers), reply.content), mixed, 3)
        assert [outcome.verdict for outcome in outcomes] == [Verdict.RETRY, Verdict.GIVE_UP, Verdict.GIVE_UP]
    assert [status for status, _ in contract.refusals] == [401, 400, 413, 400]
