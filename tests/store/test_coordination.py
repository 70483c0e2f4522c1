"""Processes and fenced leases, on both engines."""

from __future__ import annotations

import time

from trackyard.store import Store


def test_a_lease_has_one_holder_and_a_generation_that_grows_on_takeover(store: Store):
    assert store.acquire("destination:1:0", "a", ttl_ms=60_000) == 1
    assert store.acquire("destination:1:0", "b", ttl_ms=60_000) is None
    assert store.acquire("destination:1:0", "a", ttl_ms=60_000) == 1  # renewal keeps the generation
    store.release("destination:1:0", "a")
    assert store.acquire("destination:1:0", "b", ttl_ms=60_000) == 2


def test_an_expired_lease_is_taken_over_and_fences_the_old_holder(store: Store):
    assert store.acquire("unit", "a", ttl_ms=1) == 1
    time.sleep(0.01)
    assert store.set_position_fenced("consumer", 10, "unit", "a", 1) is False  # expired
    assert store.acquire("unit", "b", ttl_ms=60_000) == 2
    assert store.set_position_fenced("consumer", 20, "unit", "b", 2) is True
    assert store.set_position_fenced("consumer", 99, "unit", "a", 1) is False
    assert store.acquire("unit", "a", ttl_ms=60_000) is None
    assert store.get_position("consumer") == 20


def test_processes_heartbeat_and_are_forgotten_with_their_leases(store: Store):
    store.heartbeat("p1", "worker", "host-a", 101)
    store.heartbeat("p2", "ingest", "host-b", 202)
    assert [(p.id, p.role, p.pid) for p in store.live_processes(within_ms=10_000)] == [
        ("p1", "worker", 101),
        ("p2", "ingest", 202),
    ]
    store.acquire("unit", "p1", ttl_ms=60_000)
    store.forget_process("p1")
    assert [p.id for p in store.live_processes(within_ms=10_000)] == ["p2"]
    assert store.acquire("unit", "p2", ttl_ms=60_000) == 2
    assert {lease.name: lease.owner for lease in store.leases()} == {"unit": "p2"}
