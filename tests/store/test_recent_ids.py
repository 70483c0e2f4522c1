"""The embedded store's in-memory dedupe window: groups added at once, expired by minute."""

from __future__ import annotations

from trackyard.store.dedupe import RecentIds

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
