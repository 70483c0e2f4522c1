"""The Spec scenario through a real `trackyard serve` into a fake Mailchimp audience."""

from __future__ import annotations

import time

import httpx

from tests import spec_events
from tests.destinations.test_mailchimp import API_KEY, LIST_ID, PETER, MailchimpAudience
from tests.fakes import FakeVendor

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")
# identify → the member and its tag; the six tracks → six member events.
# page, screen, group and alias are filtered with a reason.
EVENT_NAMES = [
    "Checkout_Started",
    "Order_Completed",
    "Product_Added",
    "Product_Viewed",
    "Products_Searched",
    "Signed_Up",
]


def as_a_client_sends_them() -> list[dict]:
    events = spec_events.scenario()
    for event in events:
        for field in SERVER_FIELDS:
            event.pop(field, None)
    return events


def test_the_spec_scenario_reaches_mailchimp_without_a_single_error(server):
    contract = MailchimpAudience()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "mailchimp",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}/3.0",
            "--setting",
            f"api_key={API_KEY}",
            "--setting",
            f"list_id={LIST_ID}",
            "--setting",
            "tags=trackyard",
            # One connection keeps log order: the member exists before its tags and events
            # (with more, those may meet a 404 first and be retried).
            "--setting",
            "concurrency=1",
        )
        time.sleep(1.5)  # the engine picks up new destinations within about a second
        reply = httpx.post(
            f"{server.url}/v1/batch",
            auth=(server.write_key, ""),
            json={"batch": as_a_client_sends_them()},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        fake.wait_for(lambda _: len(contract.events) == len(EVENT_NAMES) or bool(contract.refusals))
        time.sleep(0.5)  # nothing more should come
        assert contract.refusals == []
        assert list(contract.members) == [PETER]
        assert contract.tags == {PETER: ["trackyard"]}
        assert sorted(event["name"] for event in contract.events) == EVENT_NAMES
