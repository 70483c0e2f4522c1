"""Destination configuration, attempts, counts and dead letters, on both engines."""

from __future__ import annotations

import pytest

from trackyard.store import LogRecord, Store
from trackyard.store.delivery import (
    Attempt,
    DeadLetter,
    DestinationExists,
    DestinationNotFound,
    MinuteCounts,
    WorkerState,
)


@pytest.fixture
def source_id(store: Store) -> int:
    return store.create_source("web", "wk-web").id


def letter(destination_id: int, seq: int) -> DeadLetter:
    return DeadLetter(
        destination_id, seq, f"m{seq}", "post", {"n": seq, "ü": "✓"}, "HTTP 400", 400, "POST /", "bad", 1
    )


def test_a_new_destination_starts_at_the_end_of_the_log(store: Store, source_id: int):
    store.append([LogRecord(source_id, f"m{i}", 1, "track", b"{}") for i in range(3)])
    config = store.create_destination(
        source_id, "webhook", "hook", {"url": "http://x"}, {"block_events": ["a"]}
    )
    assert store.get_position(config.consumer) == 3
    assert (
        config.enabled
        and config.settings == {"url": "http://x"}
        and config.filters == {"block_events": ["a"]}
    )
    with pytest.raises(DestinationExists):
        store.create_destination(source_id, "webhook", "hook", {})
    with pytest.raises(DestinationNotFound):
        store.get_destination("nope")


def test_updates_change_settings_and_switch_and_bump_the_version(store: Store, source_id: int):
    config = store.create_destination(source_id, "webhook", "hook", {"url": "http://x"})
    off = store.update_destination("hook", enabled=False)
    assert not off.enabled and off.updated_ms > config.updated_ms
    changed = store.update_destination("hook", settings={"url": "http://y"})
    assert changed.settings == {"url": "http://y"} and not changed.enabled
    assert [c.name for c in store.list_destinations()] == ["hook"]


def test_attempts_counts_and_worker_state_are_recorded_together(store: Store, source_id: int):
    config = store.create_destination(source_id, "webhook", "hook", {})
    attempts = [
        Attempt(
            config.id, 1000 + i, 200 if i % 2 else 500, "delivered" if i % 2 else "retry", 1.5, 10, [f"m{i}"]
        )
        for i in range(6)
    ]
    counts = {
        (config.id, 5): MinuteCounts(delivered=10, retried=3),
        (config.id, 6): MinuteCounts(failed=2, filtered=1),
    }
    store.record_delivery(attempts, counts, [WorkerState(config.id, retrying=3, in_flight=2, updated_ms=77)])
    store.record_delivery([], {(config.id, 6): MinuteCounts(delivered=5)})
    assert store.delivery_totals(config.id) == MinuteCounts(delivered=15, retried=3, failed=2, filtered=1)
    assert [minute for minute, _ in store.delivery_series(config.id, 6)] == [6]
    failed = store.recent_attempts(config.id, failed_only=True)
    assert [a.message_ids for a in failed] == [["m4"], ["m2"], ["m0"]]
    assert store.worker_state(config.id) == WorkerState(config.id, 3, 2, 77)
    store.prune_attempts(keep=2)
    assert len(store.recent_attempts(config.id, limit=100)) == 2


def test_dead_letters_are_queued_claimed_resolved_or_buried(store: Store, source_id: int):
    config = store.create_destination(source_id, "webhook", "hook", {})
    store.add_dead_letters([letter(config.id, seq) for seq in (1, 2, 3)])
    assert store.count_dead_letters(config.id) == 3
    assert store.dead_letters(config.id)[0].body == {"n": 1, "ü": "✓"}
    assert store.requeue_dead_letters(config.id) == 3
    assert store.requeue_dead_letters(config.id) == 0
    taken = store.take_queued_dead_letters(config.id, limit=2)
    assert [d.seq for d in taken] == [1, 2]
    assert store.take_queued_dead_letters(config.id, limit=10)[0].seq == 3
    store.release_dead_letters(config.id)  # a crashed worker's claims go back to the queue
    assert len(store.dead_letters(config.id, "queued")) == 3
    claimed = store.take_queued_dead_letters(config.id)
    store.resolve_dead_letters([claimed[0].id])
    store.bury_dead_letters([(claimed[1].id, "still bad", 422, "req", "resp")])
    remaining = {d.seq: d for d in store.dead_letters(config.id)}
    assert set(remaining) == {2, 3}
    assert remaining[2].state == "dead" and remaining[2].reason == "still bad" and remaining[2].status == 422
    assert store.count_dead_letters(config.id) == 1
