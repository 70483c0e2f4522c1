"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake Customer.io
that checks the Track API v2 contract, through `trackyard destination add ... customerio`."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_customerio_contract import API_KEY, SITE_ID, customerio_contract
from tests.fakes import Captured, FakeVendor, Reply
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, parse_settings
from trackyard.destinations.customerio import destination

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
        reply = customerio_contract(request)
        with self.lock:
            self.statuses.append(reply[0])
        return reply


def items(requests: Sequence[Captured | Request]) -> list[dict[str, Any]]:
    """The batch items carried by captured or rendered requests."""
    return [item for request in requests for item in orjson.loads(request.body)["batch"]]


def test_the_spec_scenario_reaches_customerio_through_trackyard_serve(server):
    recorder = Recorder()
    with FakeVendor(recorder) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "customerio",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"site_id={SITE_ID}",
            "--setting",
            f"api_key={API_KEY}",
        )
        time.sleep(1.5)
        messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
        response = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert response.status_code == 200
        received = fake.wait_for(lambda requests: len(items(requests)) >= len(messages), timeout=30)
    assert set(recorder.statuses) == {200}
    stored = server.events("--source", "default")
    settings = parse_settings(
        destination.Settings, {"site_id": SITE_ID, "api_key": API_KEY, "base_url": fake.url}
    )
    expected = items(render(destination, settings, stored))
    assert sorted(map(orjson.dumps, items(received))) == sorted(map(orjson.dumps, expected))
