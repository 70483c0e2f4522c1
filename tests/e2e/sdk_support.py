"""What the SDK end-to-end tests share: the scenario's payloads, a bounded wait for stored
events, and the field-by-field comparison of what an SDK sent with what trackyard stored.

"Sent" always means the message as the SDK itself put it on the wire (or reported it back
after delivery), never the test's own idea of it: the SDK's enrichment (context.library,
page properties, _metadata, …) must survive ingestion unchanged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Server

BURST = 200
SCENARIO_CALLS = 6  # identify, track Order Completed, page, screen, group, alias
WAIT_S = 20.0

IDENTIFY_TRAITS: dict[str, Any] = {
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "plan": "enterprise",
    "logins": 5,
}
# Spec e-commerce "Order Completed" (segment-contract.md §2.4).
ORDER_COMPLETED: dict[str, Any] = {
    "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
    "order_id": "50314b8e9bcf000000000000",
    "affiliation": "Google Store",
    "total": 27.5,
    "subtotal": 22.5,
    "revenue": 25.0,
    "shipping": 3,
    "tax": 2,
    "discount": 2.5,
    "coupon": "hasbros",
    "currency": "USD",
    "products": [
        {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "45790-32",
            "name": "Monopoly: 3rd Edition",
            "price": 19,
            "quantity": 1,
            "category": "Games",
            "url": "https://www.example.com/product/path",
            "image_url": "https://www.example.com/product/path.jpg",
        },
        {
            "product_id": "505bd76785ebb509fc183733",
            "sku": "46493-32",
            "name": "Uno Card Game",
            "price": 3,
            "quantity": 2,
            "category": "Games",
        },
    ],
}
PAGE_PROPERTIES: dict[str, Any] = {
    "url": "https://example.com/pricing",
    "title": "Pricing",
    "referrer": "https://example.com/",
}
SCREEN_PROPERTIES: dict[str, Any] = {"variation": "blue"}
GROUP_TRAITS: dict[str, Any] = {"name": "Initech", "industry": "Software", "employees": 120}

# Top-level fields compared as values; None and absent are the same (python sends explicit nulls).
_COMPARED = (
    "type",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "event",
    "name",
    "category",
    "properties",
    "traits",
    "integrations",
    "_metadata",
)
# What the server may add to a message's context (segment-contract.md §1.9).
_SERVER_CONTEXT_KEYS = frozenset({"ip"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def instant_ms(value: str) -> int:
    """Milliseconds since the epoch of an ISO-8601 string (`Z` or an offset, ms or µs)."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"timestamp without a zone: {value!r}"
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


def wait_for_message_ids(
    server: Server,
    message_ids: Iterable[str],
    *,
    timeout: float = WAIT_S,
    pause: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Poll the stored events until every id in `message_ids` is there, or the deadline passes.

    Returns the stored events as of the last poll; the caller's assertions report what is missing.
    `pause` lets a Playwright test keep its event loop turning while it waits.
    """
    wanted = set(message_ids)
    deadline = time.monotonic() + timeout
    events = server.events()
    for _ in range(int(timeout / 0.2) + 1):
        if wanted <= {event.get("messageId") for event in events} or time.monotonic() >= deadline:
            break
        pause(0.2)
        events = server.events()
    return events


def assert_stored_exactly_once(sent: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    """Every sent messageId is stored once: no loss, no duplicate, nothing foreign."""
    sent_ids = [message["messageId"] for message in sent]
    assert len(sent_ids) == len(set(sent_ids)), "the SDK reported the same messageId twice"
    counts = Counter(event.get("messageId") for event in stored)
    duplicates = {message_id: n for message_id, n in counts.items() if n > 1}
    assert not duplicates, f"stored more than once: {duplicates}"
    missing = set(sent_ids) - counts.keys()
    assert not missing, (
        f"{len(missing)} of {len(sent_ids)} sent messages were not stored: {sorted(missing)[:5]}"
    )
    foreign = counts.keys() - set(sent_ids)
    assert not foreign, f"stored events nobody sent: {sorted(map(str, foreign))[:5]}"
    assert len(stored) == len(sent_ids)


def assert_event_matches(sent: dict[str, Any], stored: dict[str, Any], *, channel: str) -> None:
    """One stored event against the message the SDK sent, field by field."""
    where = f"{sent.get('type')} {sent['messageId']}"
    assert stored["messageId"] == sent["messageId"]
    for name in _COMPARED:
        assert stored.get(name) == sent.get(name), (
            f"{where}: {name} differs: sent {sent.get(name)!r}, stored {stored.get(name)!r}"
        )
    sent_context = sent.get("context") or {}
    stored_context = stored.get("context") or {}
    assert stored_context.get("library") == sent_context.get("library"), f"{where}: context.library"
    kept = {key: value for key, value in stored_context.items() if key not in _SERVER_CONTEXT_KEYS}
    assert kept == sent_context, f"{where}: context differs: sent {sent_context!r}, stored {stored_context!r}"
    assert stored.get("channel") == channel, f"{where}: channel {stored.get('channel')!r}"
    assert "writeKey" not in stored, f"{where}: the write key was stored with the event"
    # originalTimestamp is the client's `timestamp`, the same instant (segment-contract.md §1.9).
    assert instant_ms(stored["originalTimestamp"]) == instant_ms(sent["timestamp"]), (
        f"{where}: originalTimestamp {stored['originalTimestamp']!r} is not the sent timestamp {sent['timestamp']!r}"
    )
    # timestamp = receivedAt − (sentAt − originalTimestamp), from the stored fields alone.
    received = instant_ms(stored["receivedAt"])
    sent_at = instant_ms(stored["sentAt"])
    assert instant_ms(stored["timestamp"]) == received - (
        sent_at - instant_ms(stored["originalTimestamp"])
    ), f"{where}: timestamp is not skew-corrected: {stored!r}"


def assert_all_match(sent: list[dict[str, Any]], stored: list[dict[str, Any]], *, channel: str) -> None:
    assert_stored_exactly_once(sent, stored)
    by_id = {event["messageId"]: event for event in stored}
    for message in sent:
        assert_event_matches(message, by_id[message["messageId"]], channel=channel)


def assert_scenario_shape(
    sent: list[dict[str, Any]], *, user_id: str, previous_id: str, burst: int = BURST
) -> dict[str, dict[str, Any]]:
    """The SDK sent the scenario the test asked for; returns the six named calls by type."""
    by_type = Counter(message["type"] for message in sent)
    assert by_type == {"identify": 1, "page": 1, "screen": 1, "group": 1, "alias": 1, "track": burst + 1}, (
        by_type
    )
    calls = {message["type"]: message for message in sent if message.get("event") != "Burst Event"}
    assert calls["identify"]["userId"] == user_id
    assert calls["identify"]["traits"] == IDENTIFY_TRAITS
    assert calls["track"]["event"] == "Order Completed"
    assert calls["track"]["properties"] == ORDER_COMPLETED
    assert calls["page"]["name"] == "Pricing"
    assert PAGE_PROPERTIES.items() <= calls["page"]["properties"].items()
    assert calls["screen"]["name"] == "Home"
    assert SCREEN_PROPERTIES.items() <= calls["screen"]["properties"].items()
    assert calls["group"]["groupId"] == "group-42"
    assert calls["group"]["traits"] == GROUP_TRAITS
    assert (calls["alias"]["userId"], calls["alias"]["previousId"]) == (user_id, previous_id)
    indexes = sorted(m["properties"]["index"] for m in sent if m.get("event") == "Burst Event")
    assert indexes == list(range(burst))
    return calls
