"""The embedded store's in-memory dedupe window: groups added at once, expired by minute."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from trackyard.store.dedupe import FrozenIds, RecentIds, freezer, top_bits

MINUTE_MS = 60_000
T0 = 1_746_093_600_000  # the start of a minute


def test_a_group_of_one_minute_is_added_and_expired_together():
    recent = RecentIds(window_ms=MINUTE_MS)
    recent.add_many([1, 2, 3], [T0, T0 + 10, T0 + 59_999])

    assert len(recent) == 3 and 2 in recent
    assert recent.expire(T0 + 2 * MINUTE_MS - 1) == 0  # the minute is still inside the window
    assert recent.expire(T0 + 2 * MINUTE_MS) == 3
    assert len(recent) == 0


def test_a_group_across_a_minute_boundary_expires_minute_by_minute():
    recent = RecentIds(window_ms=MINUTE_MS)
    recent.add_many([1, 2, 3], [T0 + 59_000, T0 + 59_999, T0 + MINUTE_MS])

    assert recent.expire(T0 + 2 * MINUTE_MS) == 2
    assert 3 in recent and 1 not in recent
    assert recent.expire(T0 + 3 * MINUTE_MS) == 1


def test_a_late_group_is_kept_with_the_newest_minute():
    recent = RecentIds(window_ms=MINUTE_MS)
    recent.add_many([1], [T0 + MINUTE_MS])
    recent.add_many([2], [T0])  # received earlier, committed later

    assert recent.expire(T0 + 2 * MINUTE_MS) == 0
    assert recent.expire(T0 + 3 * MINUTE_MS) == 2


def test_a_group_is_new_only_without_known_or_repeated_ids():
    recent = RecentIds(window_ms=MINUTE_MS)
    recent.add_many([1, 2], [T0, T0])

    assert recent.is_new([3, 4])
    assert not recent.is_new([3, 2])
    assert not recent.is_new([5, 5])


@contextmanager
def freezer_held() -> Iterator[None]:
    """Keep the freezer thread busy, so that the sets being frozen stay sets meanwhile."""
    release = threading.Event()
    busy = freezer().submit(release.wait, 10)
    try:
        yield
    finally:
        release.set()
        busy.result()


def test_ids_past_the_hot_limit_are_found_while_and_after_they_freeze():
    recent = RecentIds(window_ms=MINUTE_MS, hot_limit=4)
    with freezer_held():
        recent.add_many(list(range(10)), [T0] * 10)
        recent.add_many([10, 11], [T0, T0])
        assert recent.frozen_arrays == 0 and len(recent) == 12
        assert all(key in recent for key in range(12)) and 12 not in recent
    recent.settle()

    assert recent.frozen_arrays >= 1 and len(recent) == 12
    assert all(key in recent for key in range(12)) and 12 not in recent
    assert not recent.is_new([99, 3]) and recent.is_new([99, 100])
    assert recent.known([3, 99, 11]) == [True, False, True]


def test_frozen_arrays_merge_like_a_binary_counter():
    recent = RecentIds(window_ms=MINUTE_MS, hot_limit=2)
    for start in range(0, 64, 2):  # 32 freezes of 2 ids each
        recent.add_many([start, start + 1], [T0, T0])
    recent.settle()

    assert recent.frozen_arrays == 1  # 32 is a power of two: one array of 64
    recent.add_many([100, 101], [T0, T0])
    recent.add_many([102, 103], [T0, T0])
    recent.settle()
    assert recent.frozen_arrays == 2  # 64 + 4
    assert all(key in recent for key in [*range(64), 100, 101, 102, 103])


def test_a_long_window_expires_by_epoch_of_a_24th():
    hour = 60 * MINUTE_MS
    recent = RecentIds(window_ms=24 * hour, hot_limit=2)
    assert recent.epoch_minutes == 60
    recent.add_many([1, 2, 3], [T0, T0, T0])  # over the limit: frozen into [1, 2, 3]
    recent.add_many([4], [T0 + 30 * MINUTE_MS])  # the same hour: [4] in the set
    recent.add_many([5], [T0 + hour])  # a new hour closes the last: then [1, 2, 3, 4]
    recent.settle()

    assert recent.frozen_arrays == 1 and len(recent) == 5
    # The first hour is forgotten once its last minute is older than 24 h, not before.
    assert recent.expire(T0 + 25 * hour - 1) == 0
    assert recent.expire(T0 + 25 * hour) == 4
    assert 4 not in recent and 5 in recent
    assert recent.expire(T0 + 26 * hour) == 1
    assert len(recent) == 0 and recent.frozen_arrays == 0


def test_an_epoch_expired_while_it_freezes_does_not_come_back():
    recent = RecentIds(window_ms=MINUTE_MS, hot_limit=2)
    with freezer_held():
        recent.add_many([1, 2], [T0, T0])
        recent.add_many([3], [T0 + MINUTE_MS])
        assert recent.expire(T0 + 2 * MINUTE_MS) == 2
    recent.settle()

    assert len(recent) == 1 and 3 in recent and 1 not in recent
    assert recent.frozen_arrays == 0


def test_ids_cost_about_9_bytes_each_once_frozen():
    recent = RecentIds(window_ms=MINUTE_MS)
    keys = [hash(("source", number)) for number in range(300_000)]
    for start in range(0, len(keys), 1000):
        recent.add_many(keys[start : start + 1000], [T0] * 1000)
    recent.settle()

    assert len(recent) == len(keys) and recent.frozen_arrays <= 3
    assert len(keys) - recent.hot_limit < recent.frozen_ids <= len(keys)
    assert recent.frozen_bytes <= 9 * recent.frozen_ids + 4 * recent.frozen_arrays
    assert all(key in recent for key in keys[::997])


def test_frozen_ids_find_exactly_their_keys_in_sparse_and_crowded_buckets():
    rng = np.random.default_rng(7)
    sparse = rng.integers(-(2**63), 2**63 - 1, 50_000, dtype=np.int64)
    crowded = np.arange(1_000, 1_100, dtype=np.int64)  # one bucket: the same top 32 bits
    frozen = FrozenIds(np.sort(np.concatenate([sparse, crowded])))
    absent = np.array([-(2**63), 2**63 - 1, 999, 1_100, 5_000, *rng.integers(0, 2**62, 1_000)])

    def hits(keys: np.ndarray) -> list[int]:
        return frozen.present(keys, top_bits(keys)).tolist()

    assert hits(sparse) == list(range(len(sparse))) and hits(crowded) == list(range(100))
    assert hits(absent) == []
    assert hits(np.array([crowded[50], absent[3], sparse[9], absent[1]])) == [0, 2]


def test_adding_waits_for_the_freezer_when_sets_pile_up():
    recent = RecentIds(window_ms=MINUTE_MS, hot_limit=2)
    for start in range(0, 2_000, 2):
        recent.add_many([start, start + 1], [T0, T0])
        assert recent.cooling_sets <= 2

    recent.settle()
    assert len(recent) == 2_000 and all(key in recent for key in range(0, 2_000, 37))
