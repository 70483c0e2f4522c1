"""The admin's own SQL (admin/storage.py) on both engines: the newest events and failures of
a source, per-minute counts topped up from the tail, soft-deleted sources whose ids are never
lent again, and destinations removed with their records."""

from __future__ import annotations

import orjson

from tests.store.conftest import engine, store
from trackyard.admin import service, storage
from trackyard.admin.live import ReceivedCounts
from trackyard.spec import now_ms
from trackyard.store import FailureRecord, LogRecord, Store
from trackyard.store.delivery import Attempt, MinuteCounts

__all__ = ["engine", "store"]


def append(store: Store, source_id: int, names: list[str], received_ms: int) -> None:
    records = [
        LogRecord(
            source_id,
            f"{source_id}-{name}-{received_ms}",
            received_ms,
            "track",
            orjson.dumps({"event": name}),
        )
        for name in names
    ]
    store.append(records)


def test_newest_events_and_failures_of_a_source_oldest_first(store: Store):
    a, b = store.create_source("a", "key-a"), store.create_source("b", "key-b")
    now = now_ms()
    append(store, a.id, ["a1", "a2"], now)
    append(store, b.id, ["b1"], now)
    append(store, a.id, ["a3"], now)
    store.append([], [FailureRecord.of(a.id, now, "bad", f"reason {i}", {"i": i}) for i in range(3)])

    newest = storage.newest_events(store, a.id, 2)
    assert [orjson.loads(event.body)["event"] for event in newest] == ["a2", "a3"]
    assert [failure.reason for failure in storage.newest_failures(store, a.id, 2)] == ["reason 1", "reason 2"]
    assert storage.newest_events(store, b.id, 10)[0].source_id == b.id


def test_received_per_minute_counts_each_source_and_reads_only_the_tail_again(store: Store):
    a, b = store.create_source("a", "key-a"), store.create_source("b", "key-b")
    now = now_ms()
    minute = now // 60_000
    append(store, a.id, ["x", "y"], now - 120_000)
    append(store, a.id, ["z"], now)
    append(store, b.id, ["w"], now)
    append(store, a.id, ["old"], now - 25 * 3600 * 1000)  # outside the 24 h window

    counts = ReceivedCounts(store)
    assert counts.per_source(minute - 60) == {a.id: {minute - 2: 2, minute: 1}, b.id: {minute: 1}}
    rows, highest = storage.received_per_minute(store, (minute - 1440) * 60_000, store.head())
    assert (rows, highest) == ([], store.head())
    append(store, b.id, ["v"], now)
    assert counts.per_source(minute)[b.id] == {minute: 2}


def test_a_deleted_source_is_hidden_revoked_and_its_id_never_comes_back(store: Store):
    store.create_source("keep", "key-keep")
    gone = service.create_source(store, "gone", "key-gone")
    append(store, gone.id, ["history"], now_ms())
    service.delete_source(store, "gone")
    assert [source["name"] for source in service.list_sources(store)] == ["keep"]
    assert "key-gone" not in {source.write_key for source in store.list_sources()}

    again = service.create_source(store, "gone", "key-gone")
    assert again.id != gone.id
    assert service.recent_events(store, "gone") == []


def test_a_removed_destination_takes_its_records_with_it(store: Store):
    source = store.create_source("s", "key-s")
    config = store.create_destination(source.id, "webhook", "hook", {"url": "http://127.0.0.1:9"})
    store.record_delivery(
        [Attempt(config.id, now_ms(), 200, "delivered", 1.0, 1, ["m1"])],
        {(config.id, now_ms() // 60_000): MinuteCounts(delivered=1)},
    )
    storage.remove_destination(store, config)
    assert store.list_destinations() == []
    assert store.recent_attempts(config.id) == [] and store.delivery_totals(config.id) == MinuteCounts()
    assert store.get_position(config.consumer) is None
