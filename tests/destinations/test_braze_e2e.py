"""The Spec scenario through a real `trackyard serve` into a fake Braze /users/track."""

from __future__ import annotations

import time

import httpx

from tests import spec_events
from tests.destinations.test_braze import API_KEY, UsersTrack
from tests.fakes import FakeVendor

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")
# identify and group; the five custom events, page and screen; two purchases. Alias is not sent.
EXPECTED = {"attributes": 2, "events": 7, "purchases": 2}


def as_a_client_sends_them() -> list[dict]:
    events = spec_events.scenario()
    for event in events:
        for field in SERVER_FIELDS:
            event.pop(field, None)
    return events


def accepted(contract: UsersTrack) -> dict[str, int]:
    return {array: len(objects) for array, objects in contract.accepted.items()}


def test_the_spec_scenario_reaches_braze_without_a_single_error(server):
    contract = UsersTrack()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "braze",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"api_key={API_KEY}",
            "--setting",
            "track_pages=true",
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
        names = sorted(event["name"] for event in contract.accepted["events"])
        assert names == sorted(
            [
                "Product Viewed",
                "Product Added",
                "Checkout Started",
                "Products Searched",
                "Signed Up",
                "Viewed Docs Pricing Page",
                "Viewed Home Screen",
            ]
        )
        assert {purchase["product_id"] for purchase in contract.accepted["purchases"]} == {
            "507f1f77",
            "505bd76",
        }
