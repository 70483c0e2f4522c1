"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake HubSpot
that checks the v3 contract, through `trackyard destination add ... hubspot`."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_hubspot_contract import HUB_ID, TOKEN, hubspot_contract, taken
from tests.fakes import Captured, FakeVendor, Reply
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, parse_settings
from trackyard.destinations.hubspot import destination

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")


def as_sent_by_a_client(event: dict[str, Any]) -> dict[str, Any]:
    """The stored Spec event as an SDK sends it: its clock time as `timestamp`, no server fields."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = event["originalTimestamp"]
    return message


class Recorder:
    """The contract handler, remembering every status it answered."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        reply = hubspot_contract(request)
        with self.lock:
            self.statuses.append(reply[0])
        return reply


def inputs(requests: Sequence[Captured | Request]) -> list[dict[str, Any]]:
    """The batch inputs carried by captured or rendered requests, without trace ids (batches differ)."""
    return [
        {key: value for key, value in item.items() if key != "objectWriteTraceId"}
        for request in requests
        for item in orjson.loads(request.body)["inputs"]
    ]


def test_the_spec_scenario_reaches_hubspot_through_trackyard_serve(server):
    recorder = Recorder()
    with FakeVendor(recorder) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "hubspot",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"access_token={TOKEN}",
            "--setting",
            f"hub_id={HUB_ID}",
        )
        time.sleep(1.5)
        messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
        response = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert response.status_code == 200
        expected_count = len(taken(spec_events.scenario()))
        received = fake.wait_for(lambda requests: len(inputs(requests)) >= expected_count, timeout=30)
    assert set(recorder.statuses) <= {200, 204}
    stored = server.events("--source", "default")
    settings = parse_settings(
        destination.Settings, {"access_token": TOKEN, "hub_id": HUB_ID, "base_url": fake.url}
    )
    expected = inputs(render(destination, settings, taken(stored)))
    assert sorted(map(orjson.dumps, inputs(received))) == sorted(map(orjson.dumps, expected))
