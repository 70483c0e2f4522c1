"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake Google Ads
API that checks the uploadClickConversions contract, through `trackyard destination add ... google_ads`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_google_ads import ACCESS_TOKEN, ACTIONS, DEVELOPER_TOKEN, UploadClickConversions
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.google_ads import destination

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")
CONVERSIONS = ("Order Completed", "Signed Up")  # the two events the conversion actions map


def as_sent_by_a_client_a_minute_ago(event: dict[str, Any]) -> dict[str, Any]:
    """The Spec event as an SDK sends it, with a recent clock time: Google refuses
    conversions older than 90 days, and the scenario's own date will pass."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = datetime.fromtimestamp(time.time() - 60, UTC).isoformat()
    return message


def test_the_spec_scenario_reaches_google_ads_through_trackyard_serve(server):
    contract = UploadClickConversions()
    with FakeVendor(contract) as fake:
        settings = {
            "base_url": fake.url,
            "customer_id": "123-456-7890",
            "conversion_actions": ACTIONS,
            "developer_token": DEVELOPER_TOKEN,
            "access_token": ACCESS_TOKEN,
        }
        options = [part for key, value in settings.items() for part in ("--setting", f"{key}={value}")]
        server.cli("destination", "add", "default", "google_ads", "--name", "x", *options)
        time.sleep(1.5)  # the engine picks up new destinations within about a second
        messages = [as_sent_by_a_client_a_minute_ago(event) for event in spec_events.scenario()]
        reply = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        fake.wait_for(
            lambda _: len(contract.accepted) >= len(CONVERSIONS) or bool(contract.refusals), timeout=30
        )
        time.sleep(0.5)  # nothing more should come
    assert contract.refusals == []
    config = parse_settings(destination.Settings, settings)
    stored = [event for event in server.events() if event.get("event") in CONVERSIONS]
    rendered = [
        row
        for request in render(destination, config, stored)
        for row in orjson.loads(request.body)["conversions"]
    ]
    assert len(rendered) == 2
    assert sorted(map(orjson.dumps, contract.accepted)) == sorted(map(orjson.dumps, rendered))
