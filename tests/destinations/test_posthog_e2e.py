"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake PostHog
that checks the capture contract, through `trackyard destination add ... posthog`."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_posthog import PostHogCapture
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.posthog import destination, event_uuid

API_KEY = "phc_e2e_project_key"
SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")


def as_sent_by_a_client(event: dict[str, Any]) -> dict[str, Any]:
    """The stored Spec event as an SDK sends it: its clock time as `timestamp`, no server fields."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = event["originalTimestamp"]
    return message


def test_the_spec_scenario_reaches_posthog_through_trackyard_serve(server):
    contract = PostHogCapture(API_KEY)
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "posthog",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"api_key={API_KEY}",
        )
        time.sleep(1.5)
        messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
        response = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert response.status_code == 200
        expected_uuids = {event_uuid(message["messageId"]) for message in messages}
        fake.wait_for(lambda _: expected_uuids <= {item["uuid"] for item in contract.accepted}, timeout=30)
    assert contract.rejections == []
    stored = server.events("--source", "default")
    settings = parse_settings(destination.Settings, {"api_key": API_KEY, "base_url": fake.url})
    requests = render(destination, settings, stored)
    expected = {item["uuid"]: item for r in requests for item in orjson.loads(r.body)["batch"]}
    assert {item["uuid"]: item for item in contract.accepted} == expected
