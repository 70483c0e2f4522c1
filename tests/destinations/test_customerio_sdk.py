"""Differential test: our Customer.io requests against those of the official SDK (PyPI `customerio`).

The SDK only speaks HTTPS to its own host, so its requests are routed to a local FakeVendor
by a transport adapter mounted on its `requests` session: method, path, headers and body
stay exactly what the SDK built. Documented differences, normalised below:
* API generation: we send v2 batch items; the SDK's per-call methods use v1. The v1 path id
  (URL-quoted) is our `identifiers.id`; v1 `data` (events) or top-level attributes
  (identify) are our `attributes`; v1 `{"type": "page"}` is our `"action": "page"`.
* `anonymous_id`: we add the anonymousId to an identified person's attributes (as Segment
  does); the SDK sends only what it is given, so it is removed before comparing.
* Event ids: the SDK passes `id` through; it is given ours (a ULID from the messageId).
* Timestamps: the SDK converts `datetime`s to unix seconds; it is given the event's
  timestamp as a `datetime`, which checks our ISO-8601 → unix-seconds conversion.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import pytest
import requests
from customerio import CustomerIO
from requests.adapters import HTTPAdapter

from tests import spec_events
from tests.fakes import Captured, FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.customerio import CustomerIOSettings, destination

SITE_ID, API_KEY = "site-1", "key-1"
SETTINGS = parse_settings(CustomerIOSettings, {"site_id": SITE_ID, "api_key": API_KEY})


class ToFakeVendor(HTTPAdapter):
    """Sends each request to the fake vendor instead of the SDK's HTTPS host, otherwise unchanged."""

    def __init__(self, vendor_url: str) -> None:
        super().__init__()
        self.vendor_url = vendor_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url)
        request.url = f"{self.vendor_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        return super().send(request, **kwargs)


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture
def sdk(vendor: FakeVendor) -> Iterator[CustomerIO]:
    client = CustomerIO(site_id=SITE_ID, api_key=API_KEY, retries=0)
    client.http.mount("https://", ToFakeVendor(vendor.url))
    yield client
    client.close()


def ours(event: dict[str, Any]) -> dict[str, Any]:
    [request] = render(destination, SETTINGS, [event])
    [item] = orjson.loads(request.body)["batch"]
    return item


def sdk_request(vendor: FakeVendor) -> Captured:
    return vendor.received()[-1]


def without_anonymous_id(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if key != "anonymous_id"}


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def test_batch_envelope_url_and_auth_match_the_sdk(sdk, vendor):
    [request] = render(destination, SETTINGS, spec_events.scenario())
    items = orjson.loads(request.body)["batch"]
    sdk.batch(copy.deepcopy(items))
    theirs = sdk_request(vendor)
    assert (theirs.method, theirs.path) == (request.method, urlsplit(request.url).path)
    assert theirs.headers["authorization"] == request.header("Authorization")
    assert theirs.headers["content-type"] == request.header("Content-Type") == "application/json"
    assert theirs.json() == orjson.loads(request.body)


@pytest.mark.parametrize("user_id", ["97980cfea0067", "user/1 ü?#"])
def test_track_matches_the_sdks_event(sdk, vendor, user_id):
    for event in [e for e in spec_events.scenario() if e["type"] == "track"]:
        event["userId"] = user_id
        item = ours(event)
        sdk.track(
            user_id, event["event"], data=event["properties"], id=item["id"], timestamp=event_time(event)
        )
        theirs = sdk_request(vendor)
        assert theirs.path.startswith("/api/v1/customers/") and theirs.path.endswith("/events")
        assert item["identifiers"] == {"id": unquote(theirs.path.split("/")[4])}
        assert {
            "name": item["name"],
            "data": without_anonymous_id(item["attributes"]),
            "id": item["id"],
            "timestamp": item["timestamp"],
        } == theirs.json()


def test_anonymous_track_matches_the_sdks_anonymous_event(sdk, vendor):
    event = spec_events.order_completed()
    del event["userId"]
    item = ours(event)
    sdk.track_anonymous(
        event["anonymousId"],
        event["event"],
        data=event["properties"],
        id=item["id"],
        timestamp=event_time(event),
    )
    theirs = sdk_request(vendor)
    assert theirs.path == "/api/v1/events"
    assert {
        "name": item["name"],
        "data": item["attributes"],
        "id": item["id"],
        "timestamp": item["timestamp"],
        "anonymous_id": item["identifiers"]["anonymous_id"],
    } == theirs.json()


def test_identify_attributes_match_the_sdks_including_created_at_seconds(sdk, vendor):
    event = spec_events.identify()
    item = ours(event)
    traits = {key: value for key, value in event["traits"].items() if key != "createdAt"}
    sdk.identify(event["userId"], **traits, created_at=datetime.fromisoformat(event["traits"]["createdAt"]))
    theirs = sdk_request(vendor)
    assert (theirs.method, unquote(theirs.path)) == ("PUT", f"/api/v1/customers/{event['userId']}")
    assert without_anonymous_id(item["attributes"]) == theirs.json()


def test_page_matches_the_sdks_pageview(sdk, vendor):
    event = spec_events.page()
    item = ours(event)
    sdk.pageview(event["userId"], event["properties"]["url"], **event["properties"])
    theirs = sdk_request(vendor)
    assert {
        "type": item["action"],
        "name": item["name"],
        "data": without_anonymous_id(item["attributes"]),
    } == theirs.json()


def test_alias_matches_the_sdks_merge(sdk, vendor):
    event = spec_events.alias()
    item = ours(event)
    sdk.merge_customers("id", event["userId"], "id", event["previousId"])
    theirs = sdk_request(vendor)
    assert theirs.path == "/api/v1/merge_customers"
    assert {"primary": item["primary"], "secondary": item["secondary"]} == theirs.json()
