"""The Spec scenario through a real `trackyard serve` into a fake Iterable."""

from __future__ import annotations

import time

import httpx

from tests import spec_events
from tests.destinations.test_iterable import API_KEY, IterableAPI
from tests.fakes import FakeVendor

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")
# identify → one user; five tracks, the page and the screen → seven events; the order → one
# purchase. group and alias are filtered with a reason.
EXPECTED = {"users": 1, "events": 7, "purchases": 1}


def as_a_client_sends_them() -> list[dict]:
    events = spec_events.scenario()
    for event in events:
        for field in SERVER_FIELDS:
            event.pop(field, None)
    return events


def accepted(contract: IterableAPI) -> dict[str, int]:
    return {kind: len(items) for kind, items in contract.accepted.items()}


def test_the_spec_scenario_reaches_iterable_without_a_single_error(server):
    contract = IterableAPI()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "iterable",
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
        assert sorted(event["eventName"] for event in contract.accepted["events"]) == sorted(
            [
                "Product Viewed",
                "Product Added",
                "Checkout Started",
                "Products Searched",
                "Signed Up",
                "Pricing page",
                "Home screen",
            ]
        )
        [purchase] = contract.accepted["purchases"]
        assert (purchase["id"], purchase["total"], len(purchase["items"])) == (
            "50314b8e9bcf000000000000",
            27.5,
            2,
        )
