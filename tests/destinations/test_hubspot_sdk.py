"""Differential test: our HubSpot requests against those of the official SDK (PyPI `hubspot-api-client`).

The SDK is pointed at a local FakeVendor through its documented `host` configuration and
its real HTTP requests are captured. Each SDK call is given our translation of the event,
built into the SDK's own models, so the comparison checks paths, methods, auth, and that
our bodies are what the SDK's models serialise (field names, nesting, string values).
Documented differences, normalised before comparing:
* `occurredAt`: the SDK takes a `datetime` and serialises it with Python's isoformat
  (`…T10:00:05.180000+00:00`); we send the ISO-8601 form with milliseconds and `Z`. Both
  are compared as the instant they denote.
* `User-Agent`: the SDK names itself; we send none of our own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from hubspot import HubSpot
from hubspot.crm.companies import BatchInputSimplePublicObjectBatchInputUpsert as CompanyBatch
from hubspot.crm.companies import SimplePublicObjectBatchInputUpsert as CompanyUpsert
from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInputUpsert as ContactBatch
from hubspot.crm.contacts import SimplePublicObjectBatchInputUpsert as ContactUpsert
from hubspot.events.send import (
    BatchedBehavioralEventHttpCompletionRequest,
    BehavioralEventHttpCompletionRequest,
)

from tests import spec_events
from tests.destinations.test_hubspot_contract import HUB_ID, TOKEN, settings, taken
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request
from trackyard.destinations.hubspot import destination


def accept(request: Captured) -> Reply:
    if request.path.startswith("/events/"):
        return 204, {}, b""
    return ok_json(
        {
            "status": "COMPLETE",
            "results": [],
            "startedAt": "2026-11-28T10:00:06Z",
            "completedAt": "2026-11-28T10:00:06Z",
        }
    )


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(accept) as fake:
        yield fake


@pytest.fixture
def sdk(vendor: FakeVendor) -> HubSpot:
    return HubSpot(access_token=TOKEN, host=vendor.url)


def ours(events: list[dict[str, Any]]) -> list[Request]:
    return render(destination, settings(), events)


def body(request: Captured | Request) -> dict[str, Any]:
    return orjson.loads(request.body)


def assert_same_call(theirs: Captured, request: Request) -> None:
    assert (theirs.method, theirs.path) == (request.method, urlsplit(request.url).path)
    assert theirs.headers["authorization"] == request.header("Authorization") == f"Bearer {TOKEN}"
    assert theirs.headers["content-type"].startswith("application/json")
    assert request.header("Content-Type") == "application/json"


def test_contact_upsert_matches_the_sdks_batch_upsert(sdk, vendor):
    [request] = ours([spec_events.identify()])
    inputs = body(request)["inputs"]
    sdk.crm.contacts.batch_api.upsert(
        ContactBatch(
            inputs=[
                ContactUpsert(
                    id=item["id"],
                    id_property=item["idProperty"],
                    object_write_trace_id=item["objectWriteTraceId"],
                    properties=item["properties"],
                )
                for item in inputs
            ]
        )
    )
    theirs = vendor.received()[-1]
    assert_same_call(theirs, request)
    assert body(theirs) == body(request)


def test_company_upsert_matches_the_sdks_batch_upsert(sdk, vendor):
    [request] = ours([spec_events.group()])
    [item] = body(request)["inputs"]
    sdk.crm.companies.batch_api.upsert(
        CompanyBatch(
            inputs=[
                CompanyUpsert(
                    id=item["id"],
                    id_property=item["idProperty"],
                    object_write_trace_id=item["objectWriteTraceId"],
                    properties=item["properties"],
                )
            ]
        )
    )
    theirs = vendor.received()[-1]
    assert_same_call(theirs, request)
    assert body(theirs) == body(request)


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_custom_events_match_the_sdks_event_batch(sdk, vendor):
    tracks = [event for event in taken(spec_events.scenario()) if event["type"] == "track"]
    [request] = ours(tracks)
    inputs = body(request)["inputs"]
    sdk.events.send.batch_api.send(
        BatchedBehavioralEventHttpCompletionRequest(
            inputs=[
                BehavioralEventHttpCompletionRequest(
                    event_name=item["eventName"],
                    email=item["email"],
                    occurred_at=instant(item["occurredAt"]),
                    uuid=item["uuid"],
                    properties=item["properties"],
                )
                for item in inputs
            ]
        )
    )
    theirs = vendor.received()[-1]
    assert_same_call(theirs, request)
    their_inputs = body(theirs)["inputs"]
    assert [instant(item.pop("occurredAt")) for item in their_inputs] == [
        instant(item.pop("occurredAt")) for item in inputs
    ]
    assert their_inputs == inputs
    assert {item["eventName"] for item in inputs} <= {
        f"pe{HUB_ID}_{name}"
        for name in (
            "product_viewed",
            "product_added",
            "checkout_started",
            "order_completed",
            "products_searched",
            "signed_up",
        )
    }


def test_the_sdk_sends_events_of_one_occurrence_to_the_single_send_path(sdk, vendor):
    """The single-occurrence call the reference names (`/events/v3/send`) takes our input unchanged."""
    [request] = ours([spec_events.order_completed()])
    [item] = body(request)["inputs"]
    sdk.events.send.basic_api.send(
        BehavioralEventHttpCompletionRequest(
            event_name=item["eventName"],
            email=item["email"],
            occurred_at=instant(item["occurredAt"]),
            uuid=item["uuid"],
            properties=item["properties"],
        )
    )
    theirs = vendor.received()[-1]
    assert theirs.path == "/events/v3/send"
    sent = body(theirs)
    assert instant(sent.pop("occurredAt")) == instant(item.pop("occurredAt"))
    assert sent == item
