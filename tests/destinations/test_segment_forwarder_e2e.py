"""End to end: `trackyard serve` forwards the Spec scenario over the Tracking API, to a fake
collector that checks the contract, and to a second `trackyard serve` that stores it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests import spec_events
from tests.conftest import Server
from tests.destinations.test_segment_forwarder import TrackingAPI
from tests.fakes import FakeVendor

RECEIVER_KEY = "wk_receiver_e2e"
SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")


def as_sent_by_a_client(event: dict[str, Any]) -> dict[str, Any]:
    """The stored Spec event as an SDK sends it: its clock time as `timestamp`, no server fields."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = event["originalTimestamp"]
    return message


def add_forwarder(sender: Server, url: str, write_key: str) -> None:
    sender.cli(
        "destination",
        "add",
        "default",
        "segment",
        "--name",
        "x",
        "--setting",
        f"base_url={url}",
        "--setting",
        f"write_key={write_key}",
    )
    time.sleep(1.5)


def send_scenario(sender: Server) -> list[dict[str, Any]]:
    messages = [as_sent_by_a_client(event) for event in spec_events.scenario()]
    response = httpx.post(
        f"{sender.url}/v1/batch", auth=(sender.write_key, ""), json={"batch": messages}, timeout=10
    )
    assert response.status_code == 200
    return messages


def by_message_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["messageId"]: event for event in events}


def test_the_spec_scenario_reaches_a_segment_collector_through_trackyard_serve(server):
    contract = TrackingAPI(RECEIVER_KEY)
    with FakeVendor(contract) as fake:
        add_forwarder(server, fake.url, RECEIVER_KEY)
        message_ids = {message["messageId"] for message in send_scenario(server)}
        fake.wait_for(lambda _: message_ids <= {m["messageId"] for m in contract.accepted}, timeout=30)
    assert contract.rejections == []
    stored = by_message_id(server.events("--source", "default"))
    for message in contract.accepted:
        original = stored[message["messageId"]]
        dropped = {"receivedAt", "sentAt", "originalTimestamp"}
        assert message == {key: value for key, value in original.items() if key not in dropped}


def wait_for_events(receiver: Server, message_ids: set[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = receiver.events("--source", "default")
        if message_ids <= {event["messageId"] for event in events}:
            return events
        time.sleep(0.25)
    raise AssertionError(f"the receiving trackyard did not store {len(message_ids)} events in {timeout} s")


def test_one_trackyard_forwards_to_another_which_stores_the_same_events(make_server):
    sender, receiver = make_server().start(), make_server().start()
    add_forwarder(sender, receiver.url, receiver.write_key)
    message_ids = {message["messageId"] for message in send_scenario(sender)}
    received = by_message_id(wait_for_events(receiver, message_ids))
    sent = by_message_id(sender.events("--source", "default"))
    assert set(received) == set(sent) == message_ids
    for message_id, original in sent.items():
        copy = received[message_id]
        # the event happened when the sender says, whatever the forwarding delay
        assert copy["timestamp"] == copy["originalTimestamp"] == original["timestamp"]
        assert copy["receivedAt"] >= original["receivedAt"]
        assert "sentAt" not in copy
        unchanged = {
            k: v for k, v in original.items() if k not in ("receivedAt", "sentAt", "originalTimestamp")
        }
        assert {k: copy[k] for k in unchanged} == unchanged
