"""segment-analytics-python, unmodified, against a real `trackyard serve`.

The SDK posts `{batch, sentAt, writeKey}` to `<host>/v1/batch` with Basic auth, explicit
`"anonymousId": null` and `+00:00` millisecond timestamps (sdk-wire-facts.md). Everything
it reports as queued must be stored exactly once and unchanged.
"""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from segment.analytics import Client
from segment.analytics.version import VERSION as SDK_VERSION

from tests.conftest import Server
from tests.e2e.sdk_support import (
    BURST,
    GROUP_TRAITS,
    IDENTIFY_TRAITS,
    ORDER_COMPLETED,
    PAGE_PROPERTIES,
    SCENARIO_CALLS,
    SCREEN_PROPERTIES,
    assert_all_match,
    assert_scenario_shape,
    wait_for_message_ids,
)

USER = "py-user-1"
PREVIOUS = "py-anon-1"


def run_scenario(client: Client, *, user_id: str = USER, burst: int = BURST) -> list[dict[str, Any]]:
    """The shared scenario through the SDK; returns each message as the SDK queued it."""
    sent: list[dict[str, Any]] = []

    def keep(result: tuple[bool, dict[str, Any]]) -> None:
        queued, message = result
        assert queued, f"the SDK refused to queue {message!r}"
        sent.append(copy.deepcopy(message))

    keep(client.identify(user_id, traits=dict(IDENTIFY_TRAITS)))
    keep(client.track(user_id, "Order Completed", copy.deepcopy(ORDER_COMPLETED)))
    keep(client.page(user_id, category="Docs", name="Pricing", properties=dict(PAGE_PROPERTIES)))
    keep(client.screen(user_id, name="Home", properties=dict(SCREEN_PROPERTIES)))
    keep(client.group(user_id, "group-42", traits=dict(GROUP_TRAITS)))
    keep(client.alias(PREVIOUS, user_id))
    for index in range(burst):
        keep(client.track(user_id, "Burst Event", {"index": index}))
    return sent


def shut_down(client: Client, timeout: float = 30.0) -> None:
    """Flush and stop the client's consumer, bounded in time (the SDK's own wait is not)."""
    worker = threading.Thread(target=client.shutdown, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"the SDK did not flush within {timeout} s"


def new_client(server: Server, errors: list[str], **options: Any) -> Client:
    def on_error(error: Exception, batch: list[dict[str, Any]]) -> None:
        errors.append(f"{error!r} ({len(batch)} messages)")

    return Client(server.write_key, host=server.url, on_error=on_error, max_retries=2, timeout=10, **options)


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_python_sdk_scenario_is_stored_field_by_field(server: Server, gzip: bool) -> None:
    errors: list[str] = []
    client = new_client(server, errors, gzip=gzip)
    try:
        sent = run_scenario(client)
    finally:
        shut_down(client)
    assert errors == []
    assert len(sent) == SCENARIO_CALLS + BURST
    calls = assert_scenario_shape(sent, user_id=USER, previous_id=PREVIOUS)
    assert calls["page"]["category"] == "Docs"
    assert sent[0]["anonymousId"] is None, "the SDK is expected to send an explicit null anonymousId"

    stored = wait_for_message_ids(server, (message["messageId"] for message in sent))

    assert_all_match(sent, stored, channel="server")
    library = {"name": "analytics-python", "version": SDK_VERSION}
    assert all(event["context"]["library"] == library for event in stored)


def test_python_sdk_explicit_timestamp_is_kept_as_original_timestamp(server: Server) -> None:
    """A back-dated event keeps its client time as originalTimestamp; `timestamp` is skew-corrected."""
    errors: list[str] = []
    client = new_client(server, errors)
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    try:
        queued, message = client.track(
            USER, "Order Completed", copy.deepcopy(ORDER_COMPLETED), timestamp=when
        )
        assert queued
        sent = [copy.deepcopy(message)]
    finally:
        shut_down(client)
    assert errors == []
    assert sent[0]["timestamp"] == "2026-01-02T03:04:05.678+00:00"

    stored = wait_for_message_ids(server, [sent[0]["messageId"]])

    assert_all_match(sent, stored, channel="server")
    assert stored[0]["originalTimestamp"] == "2026-01-02T03:04:05.678Z"
