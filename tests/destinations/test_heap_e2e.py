"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake Heap that
checks the server-side API contract, through `trackyard destination add ... heap`."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_heap import HeapServerAPI
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.heap import destination

APP_ID = "3417920188"
SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")
HEAP_TYPES = ("identify", "track", "page", "screen")


def as_sent_by_a_client(event: dict[str, Any]) -> dict[str, Any]:
    """The stored Spec event as an SDK sends it: its clock time as `timestamp`, no server fields."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = event["originalTimestamp"]
    return message


def test_the_spec_scenario_reaches_heap_through_trackyard_serve(server):
    contract = HeapServerAPI(APP_ID)
    messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
    tracked = {m["messageId"] for m in messages if m["type"] in ("track", "page", "screen")}
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "heap",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"app_id={APP_ID}",
        )
        time.sleep(1.5)
        response = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert response.status_code == 200
        # Heap's default rate limit is 0.25 requests/s and its max_wait 4 s: allow for both
        fake.wait_for(
            lambda _: tracked <= {e["idempotency_key"] for e in contract.events} and contract.users,
            timeout=40,
        )
    assert contract.rejections == []
    stored = [event for event in server.events("--source", "default") if event["type"] in HEAP_TYPES]
    settings = parse_settings(destination.Settings, {"app_id": APP_ID, "base_url": fake.url})
    users, tracks = render(destination, settings, stored)
    assert contract.users == orjson.loads(users.body)["users"]
    received = {event["idempotency_key"]: event for event in contract.events}
    assert received == {event["idempotency_key"]: event for event in orjson.loads(tracks.body)["events"]}
