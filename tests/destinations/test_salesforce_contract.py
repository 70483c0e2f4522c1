"""A fake Salesforce REST API (composite resource) that checks the documented contract.

The contract (developer.salesforce.com REST API: Composite, Upsert Records Using sObject Rows
by External ID; destinations-marketing.md §8): `Authorization: Bearer <access token>` (401
`[{"errorCode": "INVALID_SESSION_ID"}]` otherwise); `POST /services/data/vNN.N/composite`
with `allOrNone` and 1 to 25 subrequests, each with a unique `referenceId` (letters,
digits, underscores, starting with a letter). Each upsert subrequest is
`PATCH /services/data/vNN.N/sobjects/<Object>/<External id field>/<value>` with fields of
the object (INVALID_FIELD otherwise), never the external id field itself; creating a Lead
needs LastName and Company, a Contact LastName (REQUIRED_FIELD_MISSING). Subresponses:
201 created, 200 updated, or an error list; the composite answer is 200
`{"compositeResponse": [...]}`.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import unquote

import httpx
import orjson

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, Response, Verdict, parse_settings
from trackyard.destinations.salesforce import SalesforceSettings, destination

TOKEN, EXTERNAL_ID = "00D5g000004Xyz!AQ4AQFakeAccessToken", "User_Id__c"
COMPOSITE = re.compile(r"^/services/data/v(\d{2,3}\.\d)/composite$")
UPSERT = re.compile(r"^/services/data/v(\d{2,3}\.\d)/sobjects/(\w+)/(\w+)/([^/]+)$")
REFERENCE_ID = re.compile(r"^[A-Za-z]\w*$")
MAX_SUBREQUESTS = 25
COMMON = {"FirstName", "LastName", "Email", "Phone", "Title", EXTERNAL_ID, "Plan__c"}
FIELDS = {
    "Lead": COMMON | {"Company", "Street", "City", "State", "PostalCode", "Country"},
    "Contact": COMMON
    | {"MailingStreet", "MailingCity", "MailingState", "MailingPostalCode", "MailingCountry"},
}
REQUIRED_ON_CREATE = {"Lead": ("LastName", "Company"), "Contact": ("LastName",)}


def errors(
    status: int, code: str, message: str, fields: list[str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    return status, [{"errorCode": code, "message": message, "fields": fields or []}]


class SalesforceContract:
    """Answers as the composite resource does, remembering the records its upserts made."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            status, body = errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
            return ok_json(body, status)
        match = COMPOSITE.match(request.path)
        if request.method != "POST" or match is None:
            status, body = errors(404, "NOT_FOUND", "The requested resource does not exist")
            return ok_json(body, status)
        try:
            body = orjson.loads(request.body)
            subrequests = body["compositeRequest"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            status, problem = errors(400, "JSON_PARSER_ERROR", "compositeRequest is required")
            return ok_json(problem, status)
        if not isinstance(subrequests, list) or not 1 <= len(subrequests) <= MAX_SUBREQUESTS:
            status, problem = errors(
                400, "INVALID_FIELD", f"a composite request takes 1 to {MAX_SUBREQUESTS} subrequests"
            )
            return ok_json(problem, status)
        references = [sub.get("referenceId") for sub in subrequests if isinstance(sub, dict)]
        if len(set(references)) != len(subrequests) or not all(
            isinstance(ref, str) and REFERENCE_ID.match(ref) for ref in references
        ):
            status, problem = errors(400, "INVALID_FIELD", "every subrequest needs its own valid referenceId")
            return ok_json(problem, status)
        with self.lock:
            results = [self.upsert(sub, match.group(1)) for sub in subrequests]
        return ok_json({"compositeResponse": results})

    def upsert(self, subrequest: dict[str, Any], version: str) -> dict[str, Any]:
        status, body = self.upsert_result(subrequest, version)
        return {
            "body": body,
            "httpHeaders": {},
            "httpStatusCode": status,
            "referenceId": subrequest["referenceId"],
        }

    def upsert_result(self, subrequest: dict[str, Any], version: str) -> tuple[int, Any]:
        match = UPSERT.match(subrequest.get("url", ""))
        if subrequest.get("method") != "PATCH" or match is None or match.group(1) != version:
            return errors(404, "NOT_FOUND", f"no upsert resource at {subrequest.get('url')}")
        sobject, field, value = match.group(2), match.group(3), unquote(match.group(4))
        if sobject not in FIELDS or field != EXTERNAL_ID:
            return errors(404, "NOT_FOUND", f"{sobject}.{field} is not an external id field")
        fields = subrequest.get("body")
        if not isinstance(fields, dict):
            return errors(400, "JSON_PARSER_ERROR", "the body must be an object")
        unknown = sorted(set(fields) - FIELDS[sobject])
        if unknown:
            return errors(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {sobject}")
        if EXTERNAL_ID in fields:
            return errors(400, "INVALID_FIELD", "the external id field cannot be in the body of an upsert")
        existing = self.records.get((sobject, value))
        if existing is None:
            missing = [name for name in REQUIRED_ON_CREATE[sobject] if not fields.get(name)]
            if missing:
                return errors(
                    400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}", missing
                )
        record = {**(existing or {"Id": f"00Q{len(self.records):012d}"}), **fields}
        self.records[(sobject, value)] = record
        return (200 if existing else 201), {
            "id": record["Id"],
            "success": True,
            "errors": [],
            "created": not existing,
        }


def settings(**overrides: str) -> SalesforceSettings:
    return parse_settings(
        SalesforceSettings,
        {
            "base_url": "https://initech.my.salesforce.com",
            "access_token": TOKEN,
            "external_id_field": EXTERNAL_ID,
            "sobject": "Contact",
            **overrides,
        },
    )


def taken(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == "identify"]


def send(vendor: FakeVendor, request: Request) -> httpx.Response:
    """Send a rendered request to the fake (whose URL replaces the host), as the engine would."""
    path = "/" + request.url.split("://", 1)[1].split("/", 1)[1]
    return httpx.request(
        request.method, vendor.url + path, headers=dict(request.headers), content=request.body
    )


def as_response(reply: httpx.Response) -> Response:
    return Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content)


def verdicts(request: Request, reply: httpx.Response) -> list[Verdict]:
    count = len(orjson.loads(request.body)["compositeRequest"])
    outcomes = destination.classify(as_response(reply), request, count)
    return [outcome.verdict for outcome in (outcomes if isinstance(outcomes, list) else [outcomes] * count)]


def test_the_spec_scenario_upserts_contacts_within_the_contract():
    with FakeVendor(SalesforceContract()) as vendor:
        [request] = render(destination, settings(), taken(spec_events.scenario()))
        reply = send(vendor, request)
        assert reply.status_code == 200
        assert reply.json()["compositeResponse"][0]["httpStatusCode"] == 201
        assert verdicts(request, reply) == [Verdict.DELIVERED]
        again = send(vendor, request)
        assert again.json()["compositeResponse"][0]["httpStatusCode"] == 200  # updated in place


def test_a_lead_needs_a_company_to_be_created_only_that_record_gives_up():
    with_company = spec_events.identify()
    with_company["userId"] = "with-company"
    with_company["traits"]["company"] = "Initech"
    [request] = render(destination, settings(sobject="Lead"), [spec_events.identify(), with_company])
    with FakeVendor(SalesforceContract()) as vendor:
        reply = send(vendor, request)
    assert verdicts(request, reply) == [Verdict.GIVE_UP, Verdict.DELIVERED]
    assert reply.json()["compositeResponse"][0]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_a_wrong_token_is_refused_and_given_up():
    [request] = render(destination, settings(access_token="expired"), [spec_events.identify()])
    with FakeVendor(SalesforceContract()) as vendor:
        reply = send(vendor, request)
    assert reply.status_code == 401 and verdicts(request, reply) == [Verdict.GIVE_UP]


def test_unknown_fields_and_oversized_batches_are_refused():
    users = []
    for index in range(26):
        event = spec_events.identify()
        event["userId"] = f"user-{index}"
        users.append(event)
    full, rest = render(destination, settings(custom_fields="plan: Plan__c; logins: Logins__c"), users)
    with FakeVendor(SalesforceContract()) as vendor:
        reply = send(vendor, full)
        assert verdicts(full, reply) == [Verdict.GIVE_UP] * 25  # Logins__c is not a field
        assert "No such column 'Logins__c'" in reply.text
        merged = orjson.loads(full.body)
        merged["compositeRequest"] += orjson.loads(rest.body)["compositeRequest"]
        merged["compositeRequest"][-1]["referenceId"] = "r25"
        oversized = send(vendor, Request(full.method, full.url, full.headers, orjson.dumps(merged)))
        assert oversized.status_code == 400


def test_two_upserts_of_one_user_in_a_request_both_apply_in_order():
    first, second = spec_events.identify(), spec_events.identify()
    second["traits"] = {"lastName": "Bolton"}
    [request] = render(destination, settings(), [first, second])
    contract = SalesforceContract()
    with FakeVendor(contract) as vendor:
        reply = send(vendor, request)
    assert [sub["httpStatusCode"] for sub in reply.json()["compositeResponse"]] == [201, 200]
    assert contract.records[("Contact", "97980cfea0067")]["LastName"] == "Bolton"
