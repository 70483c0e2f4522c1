"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake Zendesk
that checks the Support API contract, through `trackyard destination add ... zendesk`."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_zendesk_contract import AGENT, API_TOKEN, SUBDOMAIN, ZendeskContract, taken
from tests.fakes import Captured, FakeVendor, Reply
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, parse_settings
from trackyard.destinations.zendesk import destination

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")


def as_sent_by_a_client(event: dict[str, Any]) -> dict[str, Any]:
    """The stored Spec event as an SDK sends it: its clock time as `timestamp`, no server fields."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = event["originalTimestamp"]
    return message


class Recorder:
    """The contract handler, remembering every status it answered."""

    def __init__(self) -> None:
        self.contract = ZendeskContract()
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        reply = self.contract(request)
        with self.lock:
            self.statuses.append(reply[0])
        return reply


def bodies(requests: Sequence[Captured | Request]) -> list[tuple[str, dict[str, Any]]]:
    """The path and body of each captured or rendered request."""
    return [
        (
            request.path if isinstance(request, Captured) else "/" + request.url.split("/", 3)[3],
            orjson.loads(request.body),
        )
        for request in requests
    ]


def test_the_spec_scenario_reaches_zendesk_through_trackyard_serve(server):
    recorder = Recorder()
    with FakeVendor(recorder) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "zendesk",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"subdomain={SUBDOMAIN}",
            "--setting",
            f"email={AGENT}",
            "--setting",
            f"api_token={API_TOKEN}",
        )
        time.sleep(1.5)
        messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
        response = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert response.status_code == 200
        expected_count = len(taken(spec_events.scenario()))
        received = fake.wait_for(lambda requests: len(requests) >= expected_count, timeout=30)
    assert set(recorder.statuses) == {201}
    stored = server.events("--source", "default")
    settings = parse_settings(
        destination.Settings,
        {"subdomain": SUBDOMAIN, "email": AGENT, "api_token": API_TOKEN, "base_url": fake.url},
    )
    expected = bodies(render(destination, settings, taken(stored)))
    assert sorted(map(orjson.dumps, bodies(received))) == sorted(map(orjson.dumps, expected))
