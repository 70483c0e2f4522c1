"""End to end: the Spec scenario, with Salesforce named in `integrations` (it is opt-in), sent to
a real `trackyard serve` reaches a fake Salesforce that checks the composite contract, through
`trackyard destination add ... salesforce`; an identify that does not name it never does."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson

from tests import spec_events
from tests.destinations.test_salesforce_contract import EXTERNAL_ID, TOKEN, SalesforceContract
from tests.fakes import Captured, FakeVendor, Reply

SERVER_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel", "originalTimestamp")


def as_sent_by_a_client(event: dict[str, Any], integrations: dict[str, bool]) -> dict[str, Any]:
    """The stored Spec event as an SDK sends it, with the given integrations object."""
    message = {key: value for key, value in event.items() if key not in SERVER_FIELDS}
    message["timestamp"] = event["originalTimestamp"]
    message["integrations"] = integrations
    return message


class Recorder:
    """The contract handler, remembering every status it answered, subrequests included."""

    def __init__(self) -> None:
        self.contract = SalesforceContract()
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> Reply:
        reply = self.contract(request)
        with self.lock:
            self.statuses.append(reply[0])
            if reply[0] == 200:
                self.statuses.extend(
                    sub["httpStatusCode"] for sub in orjson.loads(reply[2])["compositeResponse"]
                )
        return reply


def upserted_urls(requests: list[Captured]) -> list[str]:
    return [sub["url"] for request in requests for sub in orjson.loads(request.body)["compositeRequest"]]


def test_opted_in_identifies_reach_salesforce_through_trackyard_serve(server):
    recorder = Recorder()
    with FakeVendor(recorder) as fake:
        server.cli(
            "destination",
            "add",
            "default",
            "salesforce",
            "--name",
            "x",
            "--setting",
            f"base_url={fake.url}",
            "--setting",
            f"access_token={TOKEN}",
            "--setting",
            f"external_id_field={EXTERNAL_ID}",
            "--setting",
            "sobject=Contact",
        )
        time.sleep(1.5)
        not_named = spec_events.identify()
        not_named.update(userId="not-opted-in", messageId="ajs-next-1764324000000-id-0000")
        messages = [as_sent_by_a_client(not_named, {"All": True})] + [
            as_sent_by_a_client(event, {"Salesforce": True}) for event in spec_events.scenario()
        ]
        response = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=10
        )
        assert response.status_code == 200
        received = fake.wait_for(lambda requests: len(upserted_urls(requests)) >= 1, timeout=30)
        time.sleep(1.0)  # the batch's other events, all filtered, had time to arrive if they were sent
        received = fake.received()
    assert upserted_urls(received) == [f"/services/data/v62.0/sobjects/Contact/{EXTERNAL_ID}/97980cfea0067"]
    assert set(recorder.statuses) <= {200, 201}
    assert recorder.contract.records[("Contact", "97980cfea0067")]["LastName"] == "Gibbons"
