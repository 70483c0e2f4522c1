"""Log retention: drop whole sealed segments that the archive and every consumer have passed.

A segment is dropped only when all of these hold, oldest first, stopping at the first
that must stay (so the log remains one contiguous range):

* it is sealed, and at least `keep_segments` newer sealed segments remain;
* the archive position and every consumer position (destinations, replays, the
  warehouse loader…) are at or past its last seq;
* its newest event is older than `hours` — never less than the dedupe window, because
  the embedded store rebuilds that window from the log at start-up.

Events of a dropped segment remain in the archive, from where replays read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackyard.store import Segment, Store
from trackyard.store.archive import ARCHIVE_CONSUMER

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class RetentionPolicy:
    hours: float = 168.0
    keep_segments: int = 2
    dedupe_window_s: int = 24 * 3600

    def horizon_ms(self, now_ms: int) -> int:
        """Segments whose newest event is older than this may go."""
        keep_ms = max(self.hours * HOUR_MS, self.dedupe_window_s * 1000)
        return now_ms - int(keep_ms)


def droppable_segments(store: Store, policy: RetentionPolicy, now_ms: int) -> list[Segment]:
    archived = store.get_position(ARCHIVE_CONSUMER)
    floor = store.min_consumer_position()
    if archived is None or floor is None:
        return []
    passed = min(archived, floor)
    horizon = policy.horizon_ms(now_ms)
    sealed = [segment for segment in store.segments() if segment.sealed]
    candidates = sealed[: max(0, len(sealed) - policy.keep_segments)]
    droppable: list[Segment] = []
    for segment in candidates:
        if segment.last_seq > passed or (segment.max_received_ms or 0) >= horizon:
            break
        droppable.append(segment)
    return droppable


def drop_expired_segments(store: Store, policy: RetentionPolicy, now_ms: int) -> list[Segment]:
    """Drop what the policy allows; returns the dropped segments."""
    dropped = droppable_segments(store, policy, now_ms)
    for segment in dropped:
        store.drop_segment(segment.id)
    return dropped
