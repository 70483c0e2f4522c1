"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake Graph API
that checks the Conversions API contract, through `trackyard destination add ... meta_conversions`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_meta_conversions import PIXEL_ID, TOKEN, GraphEvents
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.meta_conversions import destination

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")
# The six track events and the page; identify, group, screen and alias are not Meta events.
EXPECTED = ["ViewContent", "AddToCart", "InitiateCheckout", "Purchase", "Search", "Signed Up", "PageView"]


def as_sent_by_a_client_a_minute_ago(event: dict[str, Any]) -> dict[str, Any]:
    """The Spec event as an SDK sends it, with a recent clock time: Meta refuses events
    older than 7 days, and the scenario's own date will pass."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = datetime.fromtimestamp(time.time() - 60, UTC).isoformat()
    return message


def test_the_spec_scenario_reaches_meta_through_trackyard_serve(server):
    contract = GraphEvents()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "meta_conversions",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"pixel_id={PIXEL_ID}",
            "--setting",
            f"access_token={TOKEN}",
        )
        time.sleep(1.5)  # the engine picks up new destinations within about a second
        messages = [as_sent_by_a_client_a_minute_ago(event) for event in spec_events.scenario()]
        reply = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        fake.wait_for(
            lambda _: len(contract.accepted) >= len(EXPECTED) or bool(contract.refusals), timeout=30
        )
        time.sleep(0.5)  # nothing more should come
    assert contract.refusals == []
    assert sorted(event["event_name"] for event in contract.accepted) == sorted(EXPECTED)
    config = parse_settings(
        destination.Settings, {"pixel_id": PIXEL_ID, "access_token": TOKEN, "base_url": fake.url}
    )
    stored = [event for event in server.events() if event["type"] in ("track", "page")]
    rendered = [
        event
        for request in render(destination, config, stored)
        for event in orjson.loads(request.body)["data"]
    ]
    assert sorted(map(orjson.dumps, contract.accepted)) == sorted(map(orjson.dumps, rendered))
