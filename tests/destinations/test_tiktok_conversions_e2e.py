"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake TikTok
Events API that checks its contract, through `trackyard destination add ... tiktok_conversions`."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_tiktok_conversions import PIXEL, TOKEN, EventTrack
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.tiktok_conversions import destination

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")
# The six track events and the page; identify, group, screen and alias are not TikTok events.
EXPECTED = [
    "ViewContent",
    "AddToCart",
    "InitiateCheckout",
    "CompletePayment",
    "Search",
    "CompleteRegistration",
    "PageView",
]


def as_sent_by_a_client(event: dict[str, Any]) -> dict[str, Any]:
    """The stored Spec event as an SDK sends it: its clock time as `timestamp`, no server fields."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = event["originalTimestamp"]
    return message


def test_the_spec_scenario_reaches_tiktok_through_trackyard_serve(server):
    contract = EventTrack()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "tiktok_conversions",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"pixel_code={PIXEL}",
            "--setting",
            f"access_token={TOKEN}",
        )
        time.sleep(1.5)  # the engine picks up new destinations within about a second
        messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
        reply = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        fake.wait_for(
            lambda _: len(contract.accepted) >= len(EXPECTED) or bool(contract.refusals), timeout=30
        )
        time.sleep(0.5)  # nothing more should come
    assert contract.refusals == []
    assert sorted(event["event"] for event in contract.accepted) == sorted(EXPECTED)
    config = parse_settings(
        destination.Settings, {"pixel_code": PIXEL, "access_token": TOKEN, "base_url": fake.url}
    )
    stored = [event for event in server.events() if event["type"] in ("track", "page")]
    rendered = [
        event
        for request in render(destination, config, stored)
        for event in orjson.loads(request.body)["data"]
    ]
    assert sorted(map(orjson.dumps, contract.accepted)) == sorted(map(orjson.dumps, rendered))
