"""Salesforce: identify → exact composite upsert requests, opt-in routing, classification, settings."""

from __future__ import annotations

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
from trackyard.destinations.salesforce import SalesforceSettings, destination
from trackyard.pipeline import route

INSTANCE, TOKEN = "https://initech.my.salesforce.com", "00D5g000004Xyz!AQ4AQFakeAccessToken"
HEADERS = (("Content-Type", "application/json"), ("Authorization", f"Bearer {TOKEN}"))
COMPOSITE = f"{INSTANCE}/services/data/v62.0/composite"
UPSERT = "/services/data/v62.0/sobjects/{object}/User_Id__c/{key}"
USER = "97980cfea0067"


def settings(**overrides: Any) -> SalesforceSettings:
    return parse_settings(
        SalesforceSettings,
        {"base_url": INSTANCE, "access_token": TOKEN, "external_id_field": "User_Id__c", **overrides},
    )


def subrequests(event: dict[str, Any], **overrides: Any) -> list[dict[str, Any]]:
    [request] = render(destination, settings(**overrides), [event])
    assert (request.method, request.url, request.headers) == ("POST", COMPOSITE, HEADERS)
    body = orjson.loads(request.body)
    assert body["allOrNone"] is False and list(body) == ["allOrNone", "compositeRequest"]
    return body["compositeRequest"]


def test_the_destination_is_in_the_catalog_and_opt_in():
    found = registry.get("salesforce")
    assert (found.name, str(found.category), found.opt_in) == ("Salesforce", "crm", True)


def test_integrations_all_does_not_enable_it_but_naming_it_does():
    event = spec_events.identify()
    assert route(event, destination.name, opt_in=destination.opt_in) is not None
    event["integrations"] = {"All": True}
    assert route(event, destination.name, opt_in=destination.opt_in) is not None
    event["integrations"] = {"Salesforce": True}
    assert route(event, destination.name, opt_in=destination.opt_in) is None


def test_identify_upserts_a_lead_by_the_external_id_field():
    assert subrequests(spec_events.identify()) == [
        {
            "method": "PATCH",
            "url": UPSERT.format(object="Lead", key=USER),
            "referenceId": "r0",
            "body": {
                "FirstName": "Peter",
                "LastName": "Gibbons",
                "Email": "peter@example.com",
                "Phone": "+1 (555) 010-9999",
                "Street": "6th St",
                "City": "San Francisco",
                "State": "CA",
                "PostalCode": "94107",
                "Country": "US",
            },
        }
    ]


def test_contacts_use_mailing_address_fields_and_no_company():
    event = spec_events.identify()
    event["traits"].update(company={"name": "Initech"}, title="Engineer")
    [subrequest] = subrequests(event, sobject="Contact")
    assert subrequest["url"] == UPSERT.format(object="Contact", key=USER)
    assert subrequest["body"] == {
        "FirstName": "Peter",
        "LastName": "Gibbons",
        "Email": "peter@example.com",
        "Phone": "+1 (555) 010-9999",
        "Title": "Engineer",
        "MailingStreet": "6th St",
        "MailingCity": "San Francisco",
        "MailingState": "CA",
        "MailingPostalCode": "94107",
        "MailingCountry": "US",
    }


def test_lead_company_and_custom_fields_are_mapped():
    event = spec_events.identify()
    event["traits"].update(company="Initech")
    [subrequest] = subrequests(event, custom_fields="plan: Plan__c; logins: Logins__c; missing: Gone__c")
    body = subrequest["body"]
    assert (body["Company"], body["Plan__c"], body["Logins__c"], "Gone__c" in body) == (
        "Initech",
        "premium",
        5,
        False,
    )


def test_a_full_name_is_split_when_first_and_last_are_missing():
    event = spec_events.identify()
    event["traits"] = {"name": "Mary Ann van Dyke", "email": "m@example.com"}
    [subrequest] = subrequests(event)
    assert (subrequest["body"]["FirstName"], subrequest["body"]["LastName"]) == ("Mary Ann van", "Dyke")


def test_matching_by_email_puts_the_lower_cased_email_in_the_external_id():
    event = spec_events.identify()
    del event["userId"]
    event["traits"]["email"] = "Peter@Example.com"
    [subrequest] = subrequests(event, match_by="email")
    assert subrequest["url"] == UPSERT.format(object="Lead", key="peter%40example.com")


def test_external_ids_are_url_encoded_in_the_path():
    event = spec_events.identify()
    event["userId"] = "user/1 ü?#"
    [subrequest] = subrequests(event)
    assert subrequest["url"] == UPSERT.format(object="Lead", key="user%2F1%20%C3%BC%3F%23")


def test_identify_without_the_matching_value_is_skipped():
    event = spec_events.identify()
    del event["userId"]
    with pytest.raises(Skip, match=r"User_Id__c ← userId"):
        destination.translate(event, settings())
    del event["traits"]["email"]
    with pytest.raises(Skip, match=r"traits\.email"):
        destination.translate(event, settings(match_by="email"))


@pytest.mark.parametrize(
    "make",
    [spec_events.order_completed, spec_events.page, spec_events.screen, spec_events.group, spec_events.alias],
)
def test_only_identify_is_taken(make):
    with pytest.raises(Skip, match="Salesforce does not take"):
        destination.translate(make(), settings())


@pytest.mark.parametrize(("version", "path"), [("v58.0", "v58.0"), ("61.0", "v61.0")])
def test_the_api_version_is_a_setting(version, path):
    [request] = render(destination, settings(api_version=version), [spec_events.identify()])
    assert request.url == f"{INSTANCE}/services/data/{path}/composite"
    assert orjson.loads(request.body)["compositeRequest"][0]["url"].startswith(
        f"/services/data/{path}/sobjects/"
    )


def test_an_unusable_api_version_skips_with_the_reason():
    with pytest.raises(Skip, match=r"not like 62\.0"):
        destination.translate(spec_events.identify(), settings(api_version="latest"))


# -- batching ----------------------------------------------------------------------------


def identifies(count: int) -> list[dict[str, Any]]:
    events = []
    for index in range(count):
        event = spec_events.identify()
        event["userId"] = f"user-{index}"
        events.append(event)
    return events


def test_2500_identifies_are_100_composite_requests_of_25():
    requests = render(destination, settings(), identifies(2_500))
    bodies = [orjson.loads(request.body)["compositeRequest"] for request in requests]
    assert [len(body) for body in bodies] == [25] * 100
    assert [sub["referenceId"] for sub in bodies[7]] == [f"r{index}" for index in range(25)]
    assert bodies[-1][-1]["url"].endswith("/User_Id__c/user-2499")


def test_two_identifies_of_one_user_stay_two_ordered_subrequests():
    first, second = spec_events.identify(), spec_events.identify()
    second["traits"] = {"lastName": "Bolton"}
    [request] = render(destination, settings(), [first, second])
    subs = orjson.loads(request.body)["compositeRequest"]
    assert [(sub["referenceId"], sub["url"], sub["body"].get("LastName")) for sub in subs] == [
        ("r0", UPSERT.format(object="Lead", key=USER), "Gibbons"),
        ("r1", UPSERT.format(object="Lead", key=USER), "Bolton"),
    ]


# -- classification ----------------------------------------------------------------------


def respond(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {})
    return Response(status, headers or {}, raw)


REQUEST = render(destination, settings(), identifies(4))[0]


def sub(reference: str, status: int, body: Any = None) -> dict[str, Any]:
    return {"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": reference}


def error(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"errorCode": code, "message": message, "fields": fields or []}]


def test_composite_results_give_one_outcome_per_record():
    body = {
        "compositeResponse": [
            sub("r0", 201, {"id": "00Q5g00000AbCdE", "success": True, "errors": [], "created": True}),
            sub(
                "r1",
                400,
                error("REQUIRED_FIELD_MISSING", "Required fields are missing: [Company]", ["Company"]),
            ),
            sub("r2", 400, error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")),
            sub("r3", 204),
        ]
    }
    assert destination.classify(respond(200, body), REQUEST, 4) == [
        Outcome.delivered("HTTP 201"),
        Outcome.give_up("HTTP 400: REQUIRED_FIELD_MISSING: Required fields are missing: [Company]"),
        Outcome.retry("HTTP 400: UNABLE_TO_LOCK_ROW: unable to obtain exclusive access to this record"),
        Outcome.delivered("HTTP 204"),
    ]


def test_subresults_are_matched_by_reference_id_and_missing_ones_retried():
    body = {
        "compositeResponse": [
            sub("r2", 300, error("MULTIPLE_CHOICES", "more than one record found for external id field")),
            sub("r0", 500, error("UNKNOWN_EXCEPTION", "An unexpected error occurred")),
            sub("r1", 400, error("LIMIT", "Too many SOQL queries: 101")),
        ]
    }
    verdicts = [outcome.verdict for outcome in destination.classify(respond(200, body), REQUEST, 4)]
    assert verdicts == [Verdict.RETRY, Verdict.RETRY, Verdict.GIVE_UP, Verdict.RETRY]


def test_the_exhausted_daily_allocation_is_a_throttle():
    body = error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    outcome = destination.classify(respond(403, body), REQUEST, 4)
    assert outcome.verdict is Verdict.RETRY and "REQUEST_LIMIT_EXCEEDED" in outcome.reason


def test_a_locked_row_for_the_whole_request_is_retried():
    outcome = destination.classify(respond(400, error("UNABLE_TO_LOCK_ROW", "locked")), REQUEST, 4)
    assert outcome.verdict is Verdict.RETRY


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "INVALID_SESSION_ID"),
        (403, "INSUFFICIENT_ACCESS"),
        (400, "JSON_PARSER_ERROR"),
        (404, "NOT_FOUND"),
    ],
)
def test_other_request_failures_give_up_with_salesforces_words(status, code):
    outcome = destination.classify(respond(status, error(code, "the reason")), REQUEST, 4)
    assert outcome.verdict is Verdict.GIVE_UP and code in outcome.reason


def test_429_and_server_unavailability_are_retried():
    busy = destination.classify(respond(429, b"", {"retry-after": "12"}), REQUEST, 4)
    unavailable = destination.classify(respond(503, error("SERVER_UNAVAILABLE", "maintenance")), REQUEST, 4)
    assert (busy.verdict, busy.retry_after, unavailable.verdict) == (Verdict.RETRY, 12.0, Verdict.RETRY)


# -- settings ----------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["base_url", "access_token", "external_id_field"])
def test_missing_settings_are_named(missing):
    raw = {"base_url": INSTANCE, "access_token": TOKEN, "external_id_field": "User_Id__c"}
    del raw[missing]
    with pytest.raises(SettingsError, match=f"'{missing}'"):
        parse_settings(SalesforceSettings, raw, "salesforce")


def test_the_token_is_secret_the_instance_url_required_and_the_object_a_choice():
    schema = {spec.name: spec for spec in settings_schema(SalesforceSettings)}
    assert schema["access_token"].secret
    assert (schema["base_url"].required, schema["base_url"].label) == (True, "Instance URL")
    assert (schema["sobject"].choices, schema["match_by"].choices) == (
        ("Lead", "Contact"),
        ("userId", "email"),
    )
    with pytest.raises(SettingsError, match="'sobject' must be one of Lead, Contact"):
        settings(sobject="Account")
