"""Google Ads click conversions: exact uploadClickConversions requests for the Spec events,
click ids and hashed identifiers, batching, partial failures and the other answers of the
Google Ads API, settings, and the Spec scenario against a fake that checks the contract.

Google refuses conversions older than 90 days, so events are re-dated to an hour ago
(`recent`). No differential test: Google's Python SDK (`google-ads`) sends gRPC, not the
REST requests we send (destinations-marketing.md §0.3).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations import hashing, registry
from trackyard.destinations.base import (
    Request,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.google_ads import GoogleAdsSettings, destination

CUSTOMER = "1234567890"
DEVELOPER_TOKEN = "aBcDeFgHiJkLmNoP-dev"
ACCESS_TOKEN = "ya29.a0AfB_byC-access-token"
ACTIONS = "Order Completed: 987654321; Signed Up: 123123123"
RAW = {
    "customer_id": "123-456-7890",
    "conversion_actions": ACTIONS,
    "developer_token": DEVELOPER_TOKEN,
    "access_token": ACCESS_TOKEN,
}
SETTINGS = parse_settings(GoogleAdsSettings, RAW)
URL = f"https://googleads.googleapis.com/v22/customers/{CUSTOMER}:uploadClickConversions"
HEADERS = (
    ("Content-Type", "application/json"),
    ("Authorization", f"Bearer {ACCESS_TOKEN}"),
    ("developer-token", DEVELOPER_TOKEN),
)
EVENT_TIME = int(time.time()) - 3600
DATE_TIME = datetime.fromtimestamp(EVENT_TIME, UTC).strftime("%Y-%m-%d %H:%M:%S+00:00")
PETER = [{"hashedEmail": hashing.sha256_hex("peter@example.com")}]


def recent(event: dict[str, Any], seconds: int = EVENT_TIME) -> dict[str, Any]:
    event["timestamp"] = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.180Z")
    return event


def settings(**overrides: str) -> GoogleAdsSettings:
    return parse_settings(GoogleAdsSettings, {**RAW, **overrides})


def only_request(event: dict[str, Any], config: GoogleAdsSettings = SETTINGS) -> Request:
    [request] = render(destination, config, [event])
    return request


def conversion(event: dict[str, Any], config: GoogleAdsSettings = SETTINGS) -> dict[str, Any]:
    [body] = orjson.loads(only_request(event, config).body)["conversions"]
    return body


def order(**properties: Any) -> dict[str, Any]:
    return recent(spec_events.track("Order Completed", properties, "m-order"))


# -- the Spec events ---------------------------------------------------------------------------


def test_catalog_knows_it_by_segments_name():
    entry = registry.get("google_ads").catalog_entry()
    assert (entry["name"], entry["category"]) == ("Google Ads Conversions", "advertising")


def test_order_completed_is_a_click_conversion_with_its_value_and_hashed_email():
    request = only_request(recent(spec_events.order_completed()))
    assert (request.method, request.url, request.headers) == ("POST", URL, HEADERS)
    assert orjson.loads(request.body) == {
        "conversions": [
            {
                "conversionAction": f"customers/{CUSTOMER}/conversionActions/987654321",
                "conversionDateTime": DATE_TIME,
                "userIdentifiers": PETER,
                "orderId": "50314b8e9bcf000000000000",
                "conversionValue": 27.5,
                "currencyCode": "USD",
            }
        ],
        "partialFailure": True,
    }


def test_signed_up_is_the_conversion_action_it_is_mapped_to():
    assert conversion(recent(spec_events.signed_up())) == {
        "conversionAction": f"customers/{CUSTOMER}/conversionActions/123123123",
        "conversionDateTime": DATE_TIME,
        "userIdentifiers": PETER,
    }


@pytest.mark.parametrize(
    "make",
    [
        spec_events.product_viewed,
        spec_events.product_added,
        spec_events.checkout_started,
        spec_events.products_searched,
    ],
)
def test_events_mapped_to_no_conversion_action_are_skipped(make):
    with pytest.raises(Skip, match="conversion_actions"):
        destination.translate(recent(make()), SETTINGS)


@pytest.mark.parametrize(
    "make", [spec_events.identify, spec_events.page, spec_events.screen, spec_events.group, spec_events.alias]
)
def test_other_calls_are_not_conversions(make):
    with pytest.raises(Skip, match="does not take"):
        destination.translate(recent(make()), SETTINGS)


# -- click ids and identifiers ---------------------------------------------------------------------


def test_the_click_id_comes_from_properties_or_the_landing_page():
    assert conversion(order(gclid="Cj0KCQiA-from-properties"))["gclid"] == "Cj0KCQiA-from-properties"
    event = order()
    event["context"]["page"]["url"] = "https://shop.example/?gclid=Cj0KCQiA-from-url&utm_source=ads"
    assert conversion(event)["gclid"] == "Cj0KCQiA-from-url"
    event["context"]["page"] = {"search": "?wbraid=WbRaId-1"}
    assert conversion(event)["wbraid"] == "WbRaId-1"


def test_only_one_click_id_is_sent_gclid_first():
    body = conversion(order(gbraid="GbRaId-1", gclid="Cj0-gclid", wbraid="WbRaId-1"))
    assert [key for key in ("gclid", "gbraid", "wbraid") if key in body] == ["gclid"]
    body = conversion(order(gbraid="GbRaId-1", wbraid="WbRaId-1"))
    assert [key for key in ("gclid", "gbraid", "wbraid") if key in body] == ["gbraid"]


def test_gmail_addresses_lose_their_dots_and_phones_are_hashed_in_e164():
    event = order()
    event["context"]["traits"] = {"email": " Peter.Gibbons@Gmail.com ", "phone": "(650) 555-1212"}
    assert conversion(event, settings(phone_country_code="1"))["userIdentifiers"] == [
        {"hashedEmail": hashing.sha256_hex("petergibbons@gmail.com")},
        {"hashedPhoneNumber": hashing.sha256_hex("+16505551212")},
    ]


def test_properties_email_wins_over_the_trait():
    assert conversion(order(email="buyer@example.com"))["userIdentifiers"] == [
        {"hashedEmail": hashing.sha256_hex("buyer@example.com")}
    ]


def test_a_conversion_with_nothing_to_match_on_is_skipped():
    event = order()
    event["context"]["traits"] = {}
    with pytest.raises(Skip, match="gclid, gbraid or wbraid, or an email or phone"):
        destination.translate(event, SETTINGS)
    event["properties"]["gclid"] = "Cj0-gclid"
    assert "userIdentifiers" not in conversion(event)


def test_value_order_currency_and_consent():
    body = conversion(
        order(revenue=25, value=30, orderId="o-9", currency="eur"), settings(ad_user_data_consent="granted")
    )
    assert (body["conversionValue"], body["orderId"], body["currencyCode"]) == (25, "o-9", "EUR")
    assert body["consent"] == {"adUserData": "GRANTED"}
    with pytest.raises(Skip, match="ISO 4217"):
        destination.translate(order(currency="euros"), SETTINGS)


def test_conversions_older_than_90_days_are_skipped():
    old = recent(spec_events.order_completed(), int(time.time()) - 91 * 86400)
    with pytest.raises(Skip, match="more than 90 days old"):
        destination.translate(old, SETTINGS)


def test_date_time_is_utc_without_fraction():
    event = order()
    event["timestamp"] = datetime.fromtimestamp(EVENT_TIME, timezone(timedelta(hours=1))).isoformat(
        timespec="milliseconds"
    )
    assert "+01:00" in event["timestamp"]
    assert conversion(event)["conversionDateTime"] == DATE_TIME


def test_manager_account_api_version_and_base_url():
    config = settings(login_customer_id="111-222-3333", api_version="v23", base_url="http://127.0.0.1:9/ads/")
    request = only_request(recent(spec_events.signed_up()), config)
    assert request.url == f"http://127.0.0.1:9/ads/v23/customers/{CUSTOMER}:uploadClickConversions"
    assert request.header("login-customer-id") == "1112223333"


# -- batching ----------------------------------------------------------------------------------


def test_2500_conversions_are_cut_at_2000_per_request_in_order():
    events = [order(order_id=f"o-{n}") for n in range(2500)]
    bodies = [orjson.loads(request.body)["conversions"] for request in render(destination, SETTINGS, events)]
    assert [len(body) for body in bodies] == [2000, 500]
    assert [c["orderId"] for body in bodies for c in body] == [f"o-{n}" for n in range(2500)]


# -- classification ----------------------------------------------------------------------------


def classify(status: int, body: Any, headers: dict[str, str] | None = None, count: int = 4):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    request = render(destination, SETTINGS, [order(order_id=f"o-{n}") for n in range(count)])[0]
    return destination.classify(Response(status, headers or {}, raw), request, count)


def failure_error(kind: str, code: str, message: str, index: int | None = None, **extra: Any) -> dict:
    error: dict[str, Any] = {"errorCode": {kind: code}, "message": message, **extra}
    if index is not None:
        error["location"] = {"fieldPathElements": [{"fieldName": "conversions", "index": index}]}
    return error


def google_ads_failure(*errors: dict) -> dict:
    return {
        "@type": "type.googleapis.com/google.ads.googleads.v22.errors.GoogleAdsFailure",
        "errors": list(errors),
        "requestId": "Xq3-req",
    }


def test_a_clean_upload_is_delivered():
    body = {
        "results": [{"gclid": "a", "conversionAction": "x", "conversionDateTime": DATE_TIME}] * 4,
        "jobId": "1",
    }
    assert classify(200, body).verdict is Verdict.DELIVERED
    assert classify(200, {**body, "partialFailureError": {"code": 0}}).verdict is Verdict.DELIVERED


def test_a_partial_failure_gives_up_only_the_rows_it_names():
    failure = {
        "code": 3,
        "message": "Multiple errors in 'details'. First error: The click can't be found., at conversions[1]",
        "details": [
            google_ads_failure(
                failure_error("conversionUploadError", "CLICK_NOT_FOUND", "The click can't be found.", 1),
                failure_error(
                    "conversionUploadError", "CLICK_CONVERSION_ALREADY_EXISTS", "Already exists.", 2
                ),
                failure_error("conversionUploadError", "TOO_RECENT_EVENT", "Retry after 6 hours.", 3),
            )
        ],
    }
    outcomes = classify(200, {"partialFailureError": failure, "results": [{}, {}, {}, {}]})
    assert [outcome.verdict for outcome in outcomes] == [
        Verdict.DELIVERED,
        Verdict.GIVE_UP,
        Verdict.DELIVERED,
        Verdict.RETRY,
    ]
    assert outcomes[1].reason == "HTTP 200: conversionUploadError: CLICK_NOT_FOUND: The click can't be found."
    assert "already recorded" in outcomes[2].reason
    assert outcomes[3].retry_after == 6 * 3600


def test_a_partial_failure_naming_no_row_gives_up_the_batch():
    outcomes = classify(200, {"partialFailureError": {"code": 3, "message": "Something went wrong"}})
    assert [outcome.verdict for outcome in outcomes] == [Verdict.GIVE_UP] * 4


def test_a_400_naming_rows_gives_those_up_and_retries_the_others():
    error = {
        "code": 400,
        "message": "Request contains an invalid argument.",
        "status": "INVALID_ARGUMENT",
        "details": [google_ads_failure(failure_error("requestError", "INVALID_INPUT", "Bad date time.", 2))],
    }
    outcomes = classify(400, {"error": error})
    assert [outcome.verdict for outcome in outcomes] == [
        Verdict.RETRY,
        Verdict.RETRY,
        Verdict.GIVE_UP,
        Verdict.RETRY,
    ]
    assert outcomes[2].reason == "HTTP 400: requestError: INVALID_INPUT: Bad date time."


@pytest.mark.parametrize(
    ("status", "rpc", "message"),
    [
        (400, "INVALID_ARGUMENT", "Invalid customer ID '123'."),
        (401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        (403, "PERMISSION_DENIED", "The caller does not have permission"),
    ],
)
def test_request_level_errors_give_up_with_googles_message(status, rpc, message):
    outcome = classify(status, {"error": {"code": status, "message": message, "status": rpc}})
    assert (outcome.verdict, outcome.reason) == (Verdict.GIVE_UP, f"HTTP {status} {rpc}: {message}")


def test_quota_errors_wait_for_the_retry_delay():
    quota = failure_error(
        "quotaError",
        "RESOURCE_TEMPORARILY_EXHAUSTED",
        "Too many requests. Retry in 30 seconds.",
        details={
            "quotaErrorDetails": {
                "rateScope": "ACCOUNT",
                "rateName": "Requests per account",
                "retryDelay": "30s",
            }
        },
    )
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [google_ads_failure(quota)],
        }
    }
    outcome = classify(429, body)
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 30.0)
    assert classify(429, b"Too Many Requests", {"retry-after": "12"}).retry_after == 12.0


def test_unavailable_and_5xx_are_retried():
    assert (
        classify(503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "down"}}).verdict
        is Verdict.RETRY
    )
    assert classify(500, b"<html>oops</html>").verdict is Verdict.RETRY


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["customer_id", "conversion_actions", "developer_token", "access_token"])
def test_a_missing_required_setting_is_named(missing):
    with pytest.raises(SettingsError, match=f"'{missing}'"):
        parse_settings(GoogleAdsSettings, {key: value for key, value in RAW.items() if key != missing})


def test_tokens_are_secret():
    schema = {spec.name: spec for spec in settings_schema(GoogleAdsSettings)}
    assert schema["developer_token"].secret and schema["access_token"].secret
    assert not schema["customer_id"].secret
    assert schema["conversion_actions"].type == "mapping"
    assert schema["ad_user_data_consent"].choices == ("unspecified", "granted", "denied")


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"customer_id": "123-456"}, "customer_id"),
        ({"login_customer_id": "abc"}, "login_customer_id"),
        ({"conversion_actions": "Order Completed: purchase"}, "conversion_actions"),
        ({"api_version": "22"}, "api_version"),
        ({"phone_country_code": "1-1"}, "phone_country_code"),
    ],
)
def test_invalid_settings_are_named(raw, named):
    with pytest.raises(SettingsError, match=named):
        settings(**raw)


# -- the contract, played by a fake Google Ads API ---------------------------------------------

_PATH = re.compile(r"^/v\d+/customers/(\d{10}):uploadClickConversions$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def rpc_error(status: int, rpc: str, message: str, *errors: dict) -> tuple[int, dict]:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc}
    if errors:
        error["details"] = [google_ads_failure(*errors)]
    return status, {"error": error}


class UploadClickConversions:
    """`customers/{id}:uploadClickConversions` as Google documents it: a Bearer access token
    (401 UNAUTHENTICATED otherwise) and a developer token, `partialFailure: true`
    (PARTIAL_FAILURE_MODE_REQUIRED), at most 2,000 conversions; each conversion a
    conversion action of this customer, `yyyy-mm-dd hh:mm:ss+hh:mm`, at most one click
    id, SHA-256 identifiers, something to match on, an ISO 4217 currency. Bad rows come
    back in `partialFailureError` with their index; `refusals` keeps every error."""

    def __init__(self) -> None:
        self.accepted: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        status, body = self.answer(request)
        with self.lock:
            if status != 200:
                self.refusals.append(body)
            elif "partialFailureError" in body:
                self.refusals.append(body["partialFailureError"])
        return ok_json(body, status)

    def answer(self, request: Captured) -> tuple[int, dict]:
        match = _PATH.match(request.path)
        if request.method != "POST" or match is None:
            return rpc_error(404, "NOT_FOUND", f"Method not found: {request.path}")
        if request.headers.get("authorization") != f"Bearer {ACCESS_TOKEN}":
            return rpc_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if request.headers.get("developer-token") != DEVELOPER_TOKEN:
            return rpc_error(
                401,
                "UNAUTHENTICATED",
                "The developer token is not valid.",
                failure_error(
                    "authenticationError", "DEVELOPER_TOKEN_INVALID", "The developer token is not valid."
                ),
            )
        body = request.json()
        if body.get("partialFailure") is not True:
            return rpc_error(
                400,
                "INVALID_ARGUMENT",
                "Partial failure mode is required.",
                failure_error("partialFailureError", "PARTIAL_FAILURE_MODE_REQUIRED", "Set partialFailure."),
            )
        conversions = body.get("conversions")
        if not isinstance(conversions, list) or not 1 <= len(conversions) <= 2000:
            return rpc_error(
                400,
                "INVALID_ARGUMENT",
                "Too many conversions.",
                failure_error(
                    "conversionUploadError", "TOO_MANY_CONVERSIONS_IN_REQUEST", "Upload at most 2000."
                ),
            )
        return self.upload(match.group(1), conversions)

    def upload(self, customer: str, conversions: list[Any]) -> tuple[int, dict]:
        errors, results = [], []
        for index, row in enumerate(conversions):
            problem = self.problem(customer, row)
            if problem:
                errors.append(failure_error(problem[0], problem[1], problem[2], index))
                results.append({})
                continue
            results.append({key: row.get(key) for key in ("conversionAction", "conversionDateTime")})
            with self.lock:
                self.accepted.append(row)
        body: dict[str, Any] = {"results": results, "jobId": "9876"}
        if errors:
            body["partialFailureError"] = {
                "code": 3,
                "message": errors[0]["message"],
                "details": [google_ads_failure(*errors)],
            }
        return 200, body

    @staticmethod
    def problem(customer: str, row: Any) -> tuple[str, str, str] | None:
        if not isinstance(row, dict):
            return "requestError", "INVALID_INPUT", "A conversion must be an object."
        if not re.fullmatch(rf"customers/{customer}/conversionActions/\d+", str(row.get("conversionAction"))):
            return "conversionUploadError", "INVALID_CONVERSION_ACTION", "Unknown conversion action."
        if not _DATE_TIME.match(str(row.get("conversionDateTime"))):
            return (
                "dateError",
                "INVALID_FIELD_FORMAT",
                "conversionDateTime must be yyyy-mm-dd hh:mm:ss+hh:mm.",
            )
        clicks = [key for key in ("gclid", "gbraid", "wbraid") if key in row]
        if len(clicks) > 1:
            return "conversionUploadError", "MULTIPLE_CLICK_IDS", "Set only one of gclid, gbraid, wbraid."
        identifiers = row.get("userIdentifiers", [])
        for identifier in identifiers:
            values = list(identifier.values())
            if (
                len(values) != 1
                or not _HEX64.match(str(values[0]))
                or set(identifier) - {"hashedEmail", "hashedPhoneNumber"}
            ):
                return (
                    "collectionSizeError",
                    "INVALID_USER_IDENTIFIER",
                    "Identifiers are hashedEmail or hashedPhoneNumber.",
                )
        if not clicks and not identifiers:
            return "conversionUploadError", "CLICK_NOT_FOUND", "Nothing to match the conversion on."
        currency = row.get("currencyCode")
        if currency is not None and not re.fullmatch(r"[A-Z]{3}", str(currency)):
            return "stringFormatError", "ILLEGAL_CHARS", "currencyCode must be ISO 4217."
        return None


def send(request: Request) -> httpx.Response:
    return httpx.post(request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted_without_any_error():
    contract = UploadClickConversions()
    with FakeVendor(contract) as vendor:
        config = settings(base_url=vendor.url)
        events = [
            recent(event)
            for event in spec_events.scenario()
            if event.get("event") in ("Order Completed", "Signed Up")
        ]
        for request in render(destination, config, events):
            reply = send(request)
            outcome = destination.classify(Response(reply.status_code, {}, reply.content), request, 2)
            assert outcome.verdict is Verdict.DELIVERED, reply.text
    assert contract.refusals == []
    assert [row["conversionAction"].rsplit("/", 1)[1] for row in contract.accepted] == [
        "987654321",
        "123123123",
    ]


def test_the_fake_refuses_what_google_refuses():
    contract = UploadClickConversions()
    with FakeVendor(contract) as vendor:
        good = only_request(recent(spec_events.order_completed()), settings(base_url=vendor.url))
        row = orjson.loads(good.body)["conversions"][0]

        def post(rows: list[dict], token: str = ACCESS_TOKEN, partial: bool = True) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}", "developer-token": DEVELOPER_TOKEN}
            return send(Request.json(good.url, {"conversions": rows, "partialFailure": partial}, headers))

        assert post([row], token="expired").status_code == 401
        assert post([row], partial=False).json()["error"]["status"] == "INVALID_ARGUMENT"
        assert post([row] * 2001).status_code == 400
        iso_time = {**row, "conversionDateTime": "2026-11-28T10:00:05.180Z"}
        clear_email = {**row, "userIdentifiers": [{"hashedEmail": "peter@example.com"}]}
        two_clicks = {**row, "gclid": "a", "wbraid": "b"}
        reply = post([row, iso_time, clear_email, two_clicks])
        assert reply.status_code == 200
        outcomes = destination.classify(Response(200, {}, reply.content), good, 4)
        assert [outcome.verdict for outcome in outcomes] == [Verdict.DELIVERED] + [Verdict.GIVE_UP] * 3
        assert "yyyy-mm-dd" in outcomes[1].reason and "hashedEmail" in outcomes[2].reason
    assert len(contract.refusals) == 4 and len(contract.accepted) == 1
