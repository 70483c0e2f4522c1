"""The Spec scenario through a real `trackyard serve` into a fake Measurement Protocol."""

from __future__ import annotations

import time

import httpx

from tests import spec_events
from tests.destinations.test_google_analytics_4 import API_SECRET, MEASUREMENT_ID, MeasurementProtocol
from tests.fakes import FakeVendor

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")
EXPECTED = [
    "identify",
    "view_item",
    "add_to_cart",
    "begin_checkout",
    "purchase",
    "search",
    "sign_up",
    "page_view",
    "screen_view",
    "join_group",
]


def as_a_client_sends_them() -> list[dict]:
    events = spec_events.scenario()
    for event in events:
        for field in SERVER_FIELDS:
            event.pop(field, None)
    return events


def test_the_spec_scenario_reaches_ga4_valid_and_complete(server):
    contract = MeasurementProtocol()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "google_analytics_4",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"measurement_id={MEASUREMENT_ID}",
            "--setting",
            f"api_secret={API_SECRET}",
        )
        time.sleep(1.5)  # the engine picks up new destinations within about a second
        reply = httpx.post(
            f"{server.url}/v1/batch",
            auth=(server.write_key, ""),
            json={"batch": as_a_client_sends_them()},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        fake.wait_for(lambda _: len(contract.collected) >= len(EXPECTED) or bool(contract.problems))
        time.sleep(0.5)  # nothing more should come: alias is not sent
        assert contract.problems == []
        assert sorted(event["name"] for event in contract.collected) == sorted(EXPECTED)
        assert all(request.path == "/mp/collect" for request in fake.received())
