"""Mailchimp: exact member upserts, tags and events, classification of Mailchimp's problem+json
answers, settings, and the Spec scenario against a fake that checks Mailchimp's documented
contract. The differential test against the official SDK is test_mailchimp_sdk.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from datetime import datetime
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
from trackyard.destinations.mailchimp import MailchimpSettings, destination, subscriber_hash

API_KEY = "3f9c2d1e0b8a7f6e5d4c3b2a19087f6e-us6"
LIST_ID = "a1b2c3d4e5"
SETTINGS = parse_settings(MailchimpSettings, {"api_key": API_KEY, "list_id": LIST_ID})
PETER = "08246082c92c89bb256bf463b32bdc92"  # md5("peter@example.com")
MEMBER_URL = f"https://us6.api.mailchimp.com/3.0/lists/{LIST_ID}/members/{PETER}"
AUTH = "Basic " + base64.b64encode(f"trackyard:{API_KEY}".encode()).decode()
HEADERS = (("Content-Type", "application/json"), ("Authorization", AUTH))


def settings(**overrides: str) -> MailchimpSettings:
    return parse_settings(MailchimpSettings, {"api_key": API_KEY, "list_id": LIST_ID, **overrides})


def requests_of(event: dict[str, Any], config: MailchimpSettings = SETTINGS) -> list[Request]:
    return render(destination, config, [event])


def only_request(event: dict[str, Any], config: MailchimpSettings = SETTINGS) -> Request:
    [request] = requests_of(event, config)
    return request


def body_of(event: dict[str, Any], config: MailchimpSettings = SETTINGS) -> dict[str, Any]:
    return orjson.loads(only_request(event, config).body)


def identify(**traits: Any) -> dict[str, Any]:
    event = spec_events.identify()
    event["traits"] = {"email": "peter@example.com", **traits}
    return event


# -- identify -------------------------------------------------------------------------------


def test_identify_upserts_the_member_by_the_md5_of_the_lower_cased_email():
    request = only_request(spec_events.identify())
    assert (request.method, request.url, request.headers) == ("PUT", MEMBER_URL, HEADERS)
    assert orjson.loads(request.body) == {
        "email_address": "peter@example.com",
        "status_if_new": "subscribed",
        "merge_fields": {
            "FNAME": "Peter",
            "LNAME": "Gibbons",
            "PHONE": "+1 (555) 010-9999",
            "ADDRESS": {
                "addr1": "6th St",
                "city": "San Francisco",
                "state": "CA",
                "zip": "94107",
                "country": "US",
            },
            "NAME": "Peter Gibbons",
            "PLAN": "premium",
            "LOGINS": 5,
            "CREATEDAT": "2026-01-15T09:30:00.000Z",
        },
    }


def test_the_subscriber_hash_matches_mailchimps_published_example():
    assert subscriber_hash("Jane.Doe@Example.com ") == "0cba00ca3da1b283a57287bcceb17e35"


def test_double_opt_in_makes_new_members_pending():
    assert body_of(identify(), settings(double_opt_in="true"))["status_if_new"] == "pending"


def test_merge_tags_follow_segments_rules():
    event = identify(
        first_name="Pete",
        account_type="pro",
        verified=True,
        nickname=None,
        favouriteColour="blue",
        interests=["a", "b"],
        company={"name": "Initech"},
        birthday="1990-05-17T00:00:00.000Z",
        address={"city": "Paris"},
    )
    assert body_of(event)["merge_fields"] == {
        "FNAME": "Pete",
        "ACCOUNTTYP": "pro",  # underscores stripped, cut to 10 characters
        "VERIFIED": "true",  # booleans and null as text
        "NICKNAME": "null",
        "FAVOURITEC": "blue",
        "BIRTHDAY": "05/17",
        # arrays and objects are left out; an incomplete address too
    }


def test_tags_come_from_the_setting_and_the_tags_trait_after_the_upsert():
    event = identify(tags=["vip", "beta", "vip"])
    upsert, tags = requests_of(event, settings(tags="newsletter,vip"))
    assert (upsert.method, upsert.url) == ("PUT", MEMBER_URL)
    assert (tags.method, tags.url, tags.headers) == ("POST", f"{MEMBER_URL}/tags", HEADERS)
    assert orjson.loads(tags.body) == {
        "tags": [
            {"name": "newsletter", "status": "active"},
            {"name": "vip", "status": "active"},
            {"name": "beta", "status": "active"},
        ],
        "is_syncing": False,
    }
    assert "TAGS" not in orjson.loads(upsert.body)["merge_fields"]


def test_a_tags_trait_may_be_comma_separated_and_may_be_renamed():
    [_, tags] = requests_of(identify(segments="a, b"), settings(tags_trait="segments"))
    assert [tag["name"] for tag in orjson.loads(tags.body)["tags"]] == ["a", "b"]


@pytest.mark.parametrize("key", ["Mailchimp", "MailChimp"])
def test_per_event_options_choose_the_audience_and_the_status(key):
    event = identify()
    event["integrations"] = {key: {"listId": "ea7918abb6", "subscriptionStatus": "unsubscribed"}}
    request = only_request(event)
    assert request.url == f"https://us6.api.mailchimp.com/3.0/lists/ea7918abb6/members/{PETER}"
    assert orjson.loads(request.body)["status"] == "unsubscribed"
    event["integrations"] = {key: {"subscriptionStatus": "gone"}}
    assert "status" not in body_of(event)


def test_an_identify_without_email_is_skipped():
    event = spec_events.identify()
    del event["traits"]["email"]
    del event["context"]["traits"]
    with pytest.raises(Skip, match=r"no traits\.email"):
        destination.translate(event, SETTINGS)


# -- track ----------------------------------------------------------------------------------


def test_order_completed_is_a_member_event_with_string_properties():
    request = only_request(spec_events.order_completed())
    assert (request.method, request.url, request.headers) == ("POST", f"{MEMBER_URL}/events", HEADERS)
    products = orjson.dumps(spec_events.PRODUCTS).decode()
    assert orjson.loads(request.body) == {
        "name": "Order_Completed",
        "properties": {
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
            "products": products,
        },
        "occurred_at": "2026-11-28T10:00:05+00:00",
        "is_syncing": False,
    }


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (spec_events.product_viewed, "Product_Viewed"),
        (spec_events.product_added, "Product_Added"),
        (spec_events.checkout_started, "Checkout_Started"),
        (spec_events.products_searched, "Products_Searched"),
        (spec_events.signed_up, "Signed_Up"),
    ],
    ids=lambda item: getattr(item, "__name__", item),
)
def test_e_commerce_events_get_mailchimp_event_names(make, name):
    body = body_of(make())
    assert body["name"] == name
    assert all(isinstance(value, str) for value in body["properties"].values())


def test_event_names_are_cut_to_30_characters_and_too_short_ones_skipped():
    event = spec_events.track("Subscription Plan Upgraded To Enterprise!", {"seats": None}, "m-1")
    assert body_of(event) == {
        "name": "Subscription_Plan_Upgraded_To_",
        "properties": {},
        "occurred_at": "2026-11-28T10:00:05+00:00",
        "is_syncing": False,
    }
    with pytest.raises(Skip, match="2 to 30"):
        destination.translate(spec_events.track("X", {}, "m-2"), SETTINGS)


def test_a_track_without_email_or_with_events_off_is_skipped():
    event = spec_events.signed_up()
    del event["context"]["traits"]
    with pytest.raises(Skip, match=r"context\.traits\.email"):
        destination.translate(event, SETTINGS)
    event["properties"]["email"] = "peter@example.com"
    assert only_request(event).url == f"{MEMBER_URL}/events"
    with pytest.raises(Skip, match="'send events' setting is off"):
        destination.translate(spec_events.signed_up(), settings(track_events="false"))


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


def test_each_member_is_its_own_request():
    events = []
    for index in range(25):
        event = identify()
        event["traits"]["email"] = f"user{index}@example.com"
        events.append(event)
    requests = render(destination, SETTINGS, events)
    assert [request.url.rsplit("/", 1)[1] for request in requests] == [
        hashlib.md5(f"user{index}@example.com".encode()).hexdigest() for index in range(25)
    ]


# -- classification -------------------------------------------------------------------------


def problem(status: int, title: str, detail: str, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": "2d1b1f7c-0000",
            **extra,
        }
    )


def classify(status: int, body: bytes, url: str = MEMBER_URL, headers: dict[str, str] | None = None):
    request = Request("PUT", url, HEADERS, b"{}")
    return destination.classify(Response(status, headers or {}, body), request, 1)


@pytest.mark.parametrize("status", [200, 204])
def test_success_is_delivered(status):
    assert classify(status, b"").verdict is Verdict.DELIVERED


@pytest.mark.parametrize(
    ("status", "title", "detail"),
    [
        (400, "Member Exists", "peter@example.com is already a list member."),
        (400, "Forgotten Email Not Subscribed", "peter@example.com was permanently deleted"),
        (401, "API Key Invalid", "Your API key may be invalid."),
        (403, "Forbidden", "You don't have permission to access this resource"),
        (404, "Resource Not Found", "The requested resource could not be found."),  # a wrong audience
    ],
)
def test_client_errors_give_up_with_mailchimps_title_and_detail(status, title, detail):
    outcome = classify(status, problem(status, title, detail))
    assert outcome.verdict is Verdict.GIVE_UP
    assert outcome.reason == f"HTTP {status}: {title}: {detail}"


def test_invalid_merge_fields_are_named_in_the_reason():
    body = problem(400, "Invalid Resource", "Your merge fields were invalid.", errors=[{"field": "BIRTHDAY"}])
    assert "BIRTHDAY" in classify(400, body).reason


@pytest.mark.parametrize("suffix", ["tags", "events"])
def test_a_404_for_tags_or_events_is_retried_while_the_member_is_created(suffix):
    outcome = classify(404, problem(404, "Resource Not Found", "not found"), f"{MEMBER_URL}/{suffix}")
    assert outcome.verdict is Verdict.RETRY and "not in the audience" in outcome.reason


def test_a_429_and_server_errors_are_retried():
    body = problem(429, "Too Many Requests", "You have exceeded the limit of 10 simultaneous connections.")
    outcome = classify(429, body, headers={"retry-after": "3"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 3.0)
    assert classify(503, b"").verdict is Verdict.RETRY


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["api_key", "list_id"])
def test_missing_settings_are_named(missing):
    raw = {"api_key": API_KEY, "list_id": LIST_ID}
    del raw[missing]
    with pytest.raises(SettingsError, match=f"'{missing}'"):
        parse_settings(MailchimpSettings, raw)


def test_an_api_key_without_its_data_centre_is_refused():
    with pytest.raises(SettingsError, match="data centre"):
        settings(api_key="3f9c2d1e0b8a7f6e5d4c3b2a19087f6e")


def test_the_api_key_is_secret():
    schema = {spec.name: spec for spec in settings_schema(MailchimpSettings)}
    assert schema["api_key"].secret and schema["api_key"].required
    assert not schema["list_id"].secret and schema["list_id"].required


def test_the_data_centre_comes_from_the_key_and_base_url_replaces_it():
    assert only_request(identify(), settings(api_key="abc-us21")).url.startswith(
        "https://us21.api.mailchimp.com/3.0/"
    )
    proxied = only_request(identify(), settings(base_url="http://127.0.0.1:9/mc/3.0/"))
    assert proxied.url == f"http://127.0.0.1:9/mc/3.0/lists/{LIST_ID}/members/{PETER}"


def test_the_catalog_knows_it_by_segments_name():
    entry = registry.get("mailchimp")
    assert entry.name == "Mailchimp"
    assert entry.catalog_entry()["category"] == "email"


# -- the contract, played by a fake Mailchimp --------------------------------------------------

MEMBER_PATH = re.compile(r"^/lists/(?P<list>[^/]+)/members/(?P<hash>[0-9a-f]{32})(?P<rest>/tags|/events)?$")
MERGE_TAG = re.compile(r"^[A-Z0-9]{1,10}$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{2,30}$")
STATUSES = {"subscribed", "unsubscribed", "cleaned", "pending", "transactional"}


def mailchimp_problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "fake",
    }


def merge_field_problems(fields: Any) -> list[str]:
    if not isinstance(fields, dict):
        return ["merge_fields must be an object"]
    problems = [f"merge tag {tag!r} is invalid" for tag in fields if not MERGE_TAG.match(tag)]
    address = fields.get("ADDRESS")
    if address is not None and not (
        isinstance(address, dict) and all(address.get(key) for key in ("addr1", "city", "state", "zip"))
    ):
        problems.append("ADDRESS needs addr1, city, state and zip")
    if "BIRTHDAY" in fields and not re.match(r"^\d{2}/\d{2}$", str(fields["BIRTHDAY"])):
        problems.append("BIRTHDAY must be MM/DD")
    problems += [f"{tag} must be a scalar" for tag, value in fields.items() if isinstance(value, list)]
    return problems


class MailchimpAudience:
    """Mailchimp's audience member endpoints as documented: Basic auth with the API key as
    password (401 "API Key Invalid"), one audience (404 otherwise), the subscriber hash
    equal to the MD5 of the lower-cased email (400), merge tags of at most 10 upper-case
    characters, tags and events only for existing members (404), event names of 2 to 30
    letters, digits, `_` or `-`, string properties and an ISO-8601 `occurred_at` (400).
    `refusals` keeps every non-2xx answer."""

    def __init__(self, api_key: str = API_KEY, list_id: str = LIST_ID) -> None:
        self.api_key, self.list_id = api_key, list_id
        self.members: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, list[str]] = {}
        self.events: list[dict[str, Any]] = []
        self.refusals: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        status, answer = self.answer(request)
        with self.lock:
            if status >= 300:
                self.refusals.append((status, answer))
        if status == 204:
            return 204, {}, b""
        return ok_json(
            answer, status, {"Content-Type": "application/problem+json"} if status >= 300 else None
        )

    def answer(self, request: Captured) -> tuple[int, dict[str, Any]]:
        if not self.authorised(request.headers.get("authorization", "")):
            return 401, mailchimp_problem(401, "API Key Invalid", "Your API key may be invalid.")
        path = request.path.removeprefix("/3.0")
        match = MEMBER_PATH.match(path)
        if match is None or match["list"] != self.list_id:
            return 404, mailchimp_problem(
                404, "Resource Not Found", "The requested resource could not be found."
            )
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return 400, mailchimp_problem(
                400, "Invalid Resource", "The resource submitted could not be validated."
            )
        if match["rest"] is None and request.method == "PUT":
            return self.upsert(match["hash"], body)
        with self.lock:
            known = match["hash"] in self.members
        if not known:
            return 404, mailchimp_problem(
                404, "Resource Not Found", "The requested resource could not be found."
            )
        if match["rest"] == "/tags" and request.method == "POST":
            return self.tag(match["hash"], body)
        if match["rest"] == "/events" and request.method == "POST":
            return self.event(match["hash"], body)
        return 405, mailchimp_problem(405, "Method Not Allowed", "The requested method is not allowed.")

    def authorised(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return password == self.api_key

    def upsert(self, member_hash: str, body: Any) -> tuple[int, dict[str, Any]]:
        email = body.get("email_address") if isinstance(body, dict) else None
        problems = []
        if not isinstance(email, str) or "@" not in email:
            problems.append("email_address is required")
        elif hashlib.md5(email.lower().encode()).hexdigest() != member_hash:
            problems.append("the subscriber hash does not match email_address")
        if member_hash not in self.members and body.get("status_if_new") not in STATUSES:
            problems.append("status_if_new is required for a new member")
        if "status" in body and body["status"] not in STATUSES:
            problems.append("status is invalid")
        problems += merge_field_problems(body.get("merge_fields", {}))
        if problems:
            return 400, mailchimp_problem(400, "Invalid Resource", "; ".join(problems))
        with self.lock:
            self.members[member_hash] = body
        return 200, {
            "id": member_hash,
            "email_address": email,
            "status": body.get("status", body["status_if_new"]),
        }

    def tag(self, member_hash: str, body: Any) -> tuple[int, dict[str, Any]]:
        tags = body.get("tags") if isinstance(body, dict) else None
        if not isinstance(tags, list) or not all(
            isinstance(tag, dict) and tag.get("name") and tag.get("status") in ("active", "inactive")
            for tag in tags
        ):
            return 400, mailchimp_problem(400, "Invalid Resource", "tags must be [{name, status}]")
        with self.lock:
            self.tags.setdefault(member_hash, []).extend(tag["name"] for tag in tags)
        return 204, {}

    def event(self, member_hash: str, body: Any) -> tuple[int, dict[str, Any]]:
        problems = []
        if not isinstance(body, dict) or not EVENT_NAME.match(str(body.get("name", ""))):
            return 400, mailchimp_problem(400, "Invalid Resource", "name: 2 to 30 letters, digits, _ or -")
        properties = body.get("properties", {})
        if not isinstance(properties, dict) or not all(
            isinstance(value, str) for value in properties.values()
        ):
            problems.append("properties values must be strings")
        try:
            datetime.fromisoformat(str(body.get("occurred_at")))
        except ValueError:
            problems.append("occurred_at must be ISO-8601")
        if problems:
            return 400, mailchimp_problem(400, "Invalid Resource", "; ".join(problems))
        with self.lock:
            self.events.append({**body, "member": member_hash})
        return 204, {}


def send(request: Request) -> httpx.Response:
    return httpx.request(request.method, request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = MailchimpAudience()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=f"{vendor.url}/3.0", tags="trackyard")
        events = [event for event in spec_events.scenario() if event["type"] in ("identify", "track")]
        for request in render(destination, config, events):  # in log order, as with one connection
            assert send(request).status_code in (200, 204)
    assert contract.refusals == []
    assert list(contract.members) == [PETER]
    assert contract.tags == {PETER: ["trackyard"]}
    assert [event["name"] for event in contract.events] == [
        "Product_Viewed",
        "Product_Added",
        "Checkout_Started",
        "Order_Completed",
        "Products_Searched",
        "Signed_Up",
    ]


def test_the_fake_refuses_what_mailchimp_refuses():
    contract = MailchimpAudience()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=f"{vendor.url}/3.0")
        upsert = only_request(spec_events.identify(), config)
        event = only_request(spec_events.signed_up(), config)
        assert send(event).status_code == 404  # not a member yet
        wrong_key = Request(
            upsert.method, upsert.url, (HEADERS[0], ("Authorization", "Basic eDp5")), upsert.body
        )
        assert send(wrong_key).json()["title"] == "API Key Invalid"
        wrong_hash = Request(upsert.method, upsert.url.replace(PETER, "0" * 32), upsert.headers, upsert.body)
        assert "does not match" in send(wrong_hash).json()["detail"]
        assert send(upsert).status_code == 200
        assert send(event).status_code == 204
        spaced = Request(event.method, event.url, event.headers, orjson.dumps({"name": "Signed Up"}))
        assert send(spaced).status_code == 400
        numbers = {**orjson.loads(event.body), "properties": {"seats": 3}}
        assert send(Request(event.method, event.url, event.headers, orjson.dumps(numbers))).status_code == 400
    assert [status for status, _ in contract.refusals] == [404, 401, 400, 400, 400]
