"""Amplitude end to end: a real `trackyard serve` delivers the Spec scenario to a contract fake."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_amplitude import API_KEY, USER_ID, AmplitudeContract, form_of
from tests.fakes import Captured, FakeVendor

SERVER_ADDED_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")


def as_sent_by_a_client() -> list[dict[str, Any]]:
    return [
        {key: value for key, value in event.items() if key not in SERVER_ADDED_FIELDS}
        for event in spec_events.scenario()
    ]


def expected_insert_ids() -> set[str]:
    """Every HTTP V2 event of the scenario: tracks, page, screen and the two products."""
    order_id = spec_events.order_completed()["messageId"]
    tracked = {
        event["messageId"] for event in spec_events.scenario() if event["type"] in ("track", "page", "screen")
    }
    return tracked | {f"{order_id}-product-1", f"{order_id}-product-2"}


def form_items(requests: list[Captured], path: str, field: str) -> list[dict[str, Any]]:
    return [item for request in requests if request.path == path for item in form_of(request.body)[field]]


def everything_arrived(requests: list[Captured]) -> bool:
    events = [
        event
        for request in requests
        if request.path == "/2/httpapi"
        for event in orjson.loads(request.body)["events"]
    ]
    identified = {
        (item["user_id"], "groups" in item) for item in form_items(requests, "/identify", "identification")
    }
    groups = {item["group_value"] for item in form_items(requests, "/groupidentify", "identification")}
    mapped = {item["global_user_id"] for item in form_items(requests, "/usermap", "mapping")}
    return (
        {event["insert_id"] for event in events} >= expected_insert_ids()
        and identified >= {(USER_ID, False), (USER_ID, True)}
        and spec_events.group()["groupId"] in groups
        and USER_ID in mapped
    )


def test_spec_scenario_reaches_amplitude_through_a_real_server(server):
    contract = AmplitudeContract()
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "amplitude",
            "--name",
            "amplitude-e2e",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"api_key={API_KEY}",
            "--setting",
            "map_aliases=true",
        )
        time.sleep(1.5)
        response = httpx.post(
            f"{server.url}/v1/batch",
            auth=(server.write_key, ""),
            json={"batch": as_sent_by_a_client()},
            timeout=15,
        )
        assert response.status_code == 200, response.text
        fake.wait_for(everything_arrived, timeout=30)
    assert contract.errors == []
