"""Amplitude: what we send, compared with what Amplitude's own Python SDK (PyPI `amplitude-analytics`) sends.

The SDK is pointed at a FakeVendor through its documented `Config(server_url=...)` and its
real HTTP requests are captured. The SDK events are given the values our mapping takes
from the Spec event (ids, time, insert_id, context fields), so what is compared is the
wire format: key names (`productId`, `revenueType`…), the body's envelope, options.
Documented differences, normalised before comparing:

* `library`: the SDK always stamps `amplitude-python/<version>`; we send the event's
  `context.library`;
* `Content-Type`: the SDK adds `; charset=UTF-8`, we send bare `application/json`
  (JSON is UTF-8 by definition); the SDK also sorts the keys of the body;
* identify and group identify: the SDK sends them as `$identify` / `$groupidentify`
  events through /2/httpapi; we use the Identify and Group Identify APIs, as Segment
  does. Their user properties, groups and ids are compared;
* group properties: the SDK wraps them in `$set`; we send them plain, which the Group
  Identify API takes as a set as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify

from tests import spec_events
from tests.destinations.test_amplitude import (
    API_KEY,
    ATTRIBUTION,
    BROWSER_FIELDS,
    amplitude_settings,
    events_body,
    form_of,
)
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.amplitude import DEFAULT_GROUP_TYPE, destination

SDK_CONTEXT = {  # BROWSER_FIELDS as the SDK's event options
    "user_id": BROWSER_FIELDS["user_id"],
    "device_id": BROWSER_FIELDS["device_id"],
    "time": BROWSER_FIELDS["time"],
    "ip": BROWSER_FIELDS["ip"],
    "language": BROWSER_FIELDS["language"],
    "platform": BROWSER_FIELDS["platform"],
    "user_agent": BROWSER_FIELDS["user_agent"],
}


def accept_everything(_: Captured) -> Reply:
    return ok_json({"code": 200, "events_ingested": 1, "payload_size_bytes": 1, "server_upload_time": 1})


@pytest.fixture
def fake() -> Iterator[FakeVendor]:
    with FakeVendor(accept_everything) as vendor:
        yield vendor


def sent_by_sdk(fake: FakeVendor, send: Any, **config: Any) -> tuple[Captured, dict[str, Any]]:
    client = Amplitude(
        API_KEY, Config(server_url=f"{fake.url}/2/httpapi", flush_interval_millis=60_000, **config)
    )
    try:
        send(client)
    finally:
        client.shutdown()  # flushes, and waits for the SDK's sending threads
    [captured] = fake.received()
    return captured, orjson.loads(captured.body)


def without_library(body: dict[str, Any]) -> dict[str, Any]:
    return {
        **body,
        "events": [{k: v for k, v in event.items() if k != "library"} for event in body["events"]],
    }


def test_track_matches_the_sdks_http_v2_request(fake):
    event = spec_events.product_viewed()
    [ours] = render(destination, amplitude_settings(), [event])
    sdk_event = BaseEvent(
        "Product Viewed",
        **SDK_CONTEXT,
        insert_id=event["messageId"],
        event_properties=event["properties"],
        user_properties=ATTRIBUTION,
    )
    captured, sdk_body = sent_by_sdk(fake, lambda client: client.track(sdk_event))

    assert (captured.method, captured.path) == ("POST", "/2/httpapi")
    assert captured.headers["content-type"].split(";")[0] == ours.header("Content-Type")
    assert sdk_body["events"][0]["library"] == "amplitude-python/1.3.0"
    assert without_library(sdk_body) == without_library(events_body(ours))


def test_order_revenue_and_products_match_the_sdks_revenue_fields(fake):
    order = spec_events.order_completed()
    [ours] = render(destination, amplitude_settings(track_revenue_per_product="true"), [order])
    first = spec_events.PRODUCTS[0]
    sdk_events = [
        BaseEvent(
            "Order Completed",
            **SDK_CONTEXT,
            insert_id=order["messageId"],
            event_properties=order["properties"],
        ),
        BaseEvent(
            "Product Purchased",
            **SDK_CONTEXT,
            insert_id=f"{order['messageId']}-product-1",
            event_properties=first,
            price=first["price"],
            quantity=first["quantity"],
            revenue=first["price"] * first["quantity"],
            product_id=first["product_id"],
            revenue_type="Purchase",
        ),
    ]
    for sdk_event in sdk_events:
        sdk_event.user_properties = ATTRIBUTION

    def send(client: Amplitude) -> None:
        for sdk_event in sdk_events:
            client.track(sdk_event)

    _, sdk_body = sent_by_sdk(fake, send)
    assert without_library(sdk_body)["events"] == without_library(events_body(ours))["events"][:2]


def test_min_id_length_options_match_the_sdk(fake):
    event = spec_events.signed_up()
    [ours] = render(destination, amplitude_settings(min_id_length="3"), [event])
    sdk_event = BaseEvent(
        "Signed Up",
        **SDK_CONTEXT,
        insert_id=event["messageId"],
        event_properties=event["properties"],
        user_properties=ATTRIBUTION,
    )
    _, sdk_body = sent_by_sdk(fake, lambda client: client.track(sdk_event), min_id_length=3)
    assert sdk_body["options"] == events_body(ours)["options"] == {"min_id_length": 3}
    assert without_library(sdk_body) == without_library(events_body(ours))


def test_identify_user_properties_match_the_sdks_identify(fake):
    event = spec_events.identify()
    [ours] = render(destination, amplitude_settings(), [event])
    [identification] = form_of(ours.body)["identification"]
    operations = Identify()
    for key, value in {**event["traits"], **ATTRIBUTION["$set"]}.items():
        operations.set(key, value)
    for key, value in ATTRIBUTION["$setOnce"].items():
        operations.set_once(key, value)
    options = EventOptions(user_id=identification["user_id"], device_id=identification["device_id"])

    _, sdk_body = sent_by_sdk(fake, lambda client: client.identify(operations, options))
    [sdk_event] = sdk_body["events"]

    assert sdk_event["event_type"] == "$identify"
    assert (sdk_event["user_id"], sdk_event["device_id"]) == (
        identification["user_id"],
        identification["device_id"],
    )
    assert sdk_event["user_properties"] == identification["user_properties"]


def test_group_membership_matches_the_sdks_set_group(fake):
    event = spec_events.group()
    membership, _ = render(destination, amplitude_settings(), [event])
    [identification] = form_of(membership.body)["identification"]
    options = EventOptions(user_id=identification["user_id"], device_id=identification["device_id"])

    _, sdk_body = sent_by_sdk(
        fake, lambda client: client.set_group(DEFAULT_GROUP_TYPE, event["groupId"], options)
    )
    [sdk_event] = sdk_body["events"]

    assert sdk_event["event_type"] == "$identify"
    assert sdk_event["groups"] == identification["groups"]
    assert sdk_event["user_properties"] == identification["user_properties"]


def test_group_properties_match_the_sdks_group_identify(fake):
    event = spec_events.group()
    _, group_identify = render(destination, amplitude_settings(), [event])
    [ours] = form_of(group_identify.body)["identification"]
    operations = Identify()
    for key, value in event["traits"].items():
        operations.set(key, value)
    options = EventOptions(user_id=event["userId"])

    _, sdk_body = sent_by_sdk(
        fake, lambda client: client.group_identify(DEFAULT_GROUP_TYPE, event["groupId"], operations, options)
    )
    [sdk_event] = sdk_body["events"]

    assert sdk_event["event_type"] == "$groupidentify"
    assert sdk_event["groups"] == {ours["group_type"]: ours["group_value"]}
    assert sdk_event["group_properties"] == {"$set": ours["group_properties"]}
