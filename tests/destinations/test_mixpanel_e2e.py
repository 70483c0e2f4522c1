"""Mixpanel end to end: a real `trackyard serve` delivers the Spec scenario to a contract fake."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_mixpanel import TOKEN, USER_ID, MixpanelContract
from tests.fakes import Captured, FakeVendor
from trackyard.destinations.mixpanel import insert_id

SERVER_ADDED_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")


def as_sent_by_a_client() -> list[dict[str, Any]]:
    return [
        {key: value for key, value in event.items() if key not in SERVER_ADDED_FIELDS}
        for event in spec_events.scenario()
    ]


def expected_insert_ids() -> set[str]:
    """Every /import event of the scenario with `id_merge=original`."""
    keys = [
        event["messageId"] for event in spec_events.scenario() if event["type"] not in ("identify", "group")
    ]
    keys += ["ajs-next-1764324000000-id-0001:identify"]
    keys += [f"ajs-next-1764324000000-oc-0002:product:{index}" for index in range(2)]
    return {insert_id(key) for key in keys}


def records(requests: list[Captured], path: str) -> list[dict[str, Any]]:
    return [record for request in requests if request.path == path for record in orjson.loads(request.body)]


def everything_arrived(requests: list[Captured]) -> bool:
    imported = {record["properties"]["$insert_id"] for record in records(requests, "/import")}
    profiles = {record["$distinct_id"] for record in records(requests, "/engage")}
    groups = {record["$group_id"] for record in records(requests, "/groups")}
    return (
        imported >= expected_insert_ids() and USER_ID in profiles and spec_events.group()["groupId"] in groups
    )


def test_spec_scenario_reaches_mixpanel_through_a_real_server(server):
    contract = MixpanelContract(secret=None)
    with FakeVendor(contract) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "mixpanel",
            "--name",
            "mixpanel-e2e",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"project_token={TOKEN}",
            "--setting",
            "id_merge=original",
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
