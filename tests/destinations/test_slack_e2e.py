"""End to end: the Spec scenario sent to a real `trackyard serve` reaches a fake Slack incoming
webhook that checks its contract, through `trackyard destination add ... slack`, at the default
rate of one message a second."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests import spec_events
from tests.destinations.test_slack_contract import WEBHOOK_PATH, slack_contract
from tests.fakes import Captured, FakeVendor, Reply
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.slack import destination

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")
WEBHOOK_URL = f"https://hooks.slack.com{WEBHOOK_PATH}"
CHANNELS = '{"Order Completed": "#sales"}'


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
        reply = slack_contract(request)
        with self.lock:
            self.statuses.append(reply[0])
        return reply


def test_the_spec_scenario_reaches_slack_through_trackyard_serve(server):
    recorder = Recorder()
    with FakeVendor(recorder) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "slack",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"webhook_url={WEBHOOK_URL}",
            "--setting",
            "whitelisted_traits=email",
            "--setting",
            f"channels={CHANNELS}",
        )
        time.sleep(1.5)
        messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
        response = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert response.status_code == 200
        # identify + six tracks; page, screen, group and alias are not sent
        received = fake.wait_for(lambda requests: len(requests) >= 7, timeout=45)
    assert recorder.statuses == [200] * 7
    # one message a second: seven messages span six seconds (a little slack for clock reads)
    assert received[-1].received_at - received[0].received_at >= 5.5
    stored = [
        event for event in server.events("--source", "default") if event["type"] in ("identify", "track")
    ]
    raw = {
        "webhook_url": WEBHOOK_URL,
        "base_url": fake.url,
        "whitelisted_traits": "email",
        "channels": CHANNELS,
    }
    expected = render(destination, parse_settings(destination.Settings, raw), stored)
    assert sorted(request.body for request in received) == sorted(request.body for request in expected)
    assert [request.json() for request in received if "channel" in request.json()] == [
        {"text": "peter@example.com did Order Completed.", "channel": "#sales"}
    ]
