"""The Spec scenario through a real `trackyard serve` into a fake SendGrid contacts API."""

from __future__ import annotations

import time

import httpx

from tests import spec_events
from tests.destinations.test_sendgrid import API_KEY, PETER, SendGridContacts
from tests.fakes import FakeVendor

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")


def as_a_client_sends_them() -> list[dict]:
    events = spec_events.scenario()
    for event in events:
        for field in SERVER_FIELDS:
            event.pop(field, None)
    return events


def test_the_spec_scenario_reaches_sendgrid_without_a_single_error(server):
    contract = SendGridContacts()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "sendgrid",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"api_key={API_KEY}",
            "--setting",
            "list_ids=list-1",
            "--setting",
            "custom_fields=plan: e1_T; logins: e2_N; createdAt: e3_D",
        )
        time.sleep(1.5)  # the engine picks up new destinations within about a second
        reply = httpx.post(
            f"{server.url}/v1/batch",
            auth=(server.write_key, ""),
            json={"batch": as_a_client_sends_them()},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        # identify is the one call SendGrid takes; the batch waits up to 5 s to fill
        fake.wait_for(lambda _: bool(contract.contacts) or bool(contract.refusals))
        time.sleep(0.5)  # nothing more should come
        assert contract.refusals == []
        assert contract.contacts == [
            {**PETER, "custom_fields": {"e1_T": "premium", "e2_N": 5, "e3_D": "01/15/2026"}}
        ]
        [request] = fake.received()
        assert request.json()["list_ids"] == ["list-1"]
