"""The Spec scenario through a real `trackyard serve` into a fake Klaviyo's bulk job endpoints."""

from __future__ import annotations

import time

import httpx

from tests import spec_events
from tests.destinations.test_klaviyo import API_KEY, KlaviyoBulkJobs
from tests.fakes import FakeVendor

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")
# identify → one profile; five tracks, the order and its two products → eight events.
# page, screen, group and alias are filtered with a reason.
EXPECTED = {"events": 8, "profiles": 1}


def as_a_client_sends_them() -> list[dict]:
    events = spec_events.scenario()
    for event in events:
        for field in SERVER_FIELDS:
            event.pop(field, None)
    return events


def accepted(contract: KlaviyoBulkJobs) -> dict[str, int]:
    return {kind: len(items) for kind, items in contract.accepted.items()}


def metric_names(contract: KlaviyoBulkJobs) -> list[str]:
    return sorted(
        event["attributes"]["metric"]["data"]["attributes"]["name"]
        for entry in contract.accepted["events"]
        for event in entry["attributes"]["events"]["data"]
    )


def test_the_spec_scenario_reaches_klaviyo_without_a_single_error(server):
    contract = KlaviyoBulkJobs()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "klaviyo",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"api_key={API_KEY}",
        )
        time.sleep(1.5)  # the engine picks up new destinations within about a second
        reply = httpx.post(
            f"{server.url}/v1/batch",
            auth=(server.write_key, ""),
            json={"batch": as_a_client_sends_them()},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        fake.wait_for(lambda _: accepted(contract) == EXPECTED or bool(contract.refusals))
        time.sleep(0.5)  # nothing more should come
        assert contract.refusals == []
        assert accepted(contract) == EXPECTED
        assert metric_names(contract) == sorted(
            [
                "Product Viewed",
                "Product Added",
                "Checkout Started",
                "Order Completed",
                "Ordered Product",
                "Ordered Product",
                "Products Searched",
                "Signed Up",
            ]
        )
        [profile] = contract.accepted["profiles"]
        assert profile["attributes"]["external_id"] == "97980cfea0067"
