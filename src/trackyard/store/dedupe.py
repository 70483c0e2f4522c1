"""The in-memory dedupe window of the embedded store.

A UNIQUE index on random messageIds caps SQLite at ~45,000 rows/s (every insert rewrites
a random index leaf; limits.md §3a). The embedded store has exactly one writer, so it
keeps the window in memory instead: a set of 64-bit hashes of (source, messageId),
expired by minute, rebuilt from the log's tail at start-up. Cost: ~70 bytes per event
in the window. A false positive needs two different ids with the same 64-bit hash
(p ≈ n / 2^64 per lookup).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol


class _Identified(Protocol):
    source_id: int
    message_id: str


def id_hash(source_id: int, message_id: str) -> int:
    # Python's string hash is SipHash, randomised per process, which is fine: the set
    # lives only in this process and is rebuilt from the log when it starts.
    return hash((source_id, message_id))


def id_hashes(records: Sequence[_Identified]) -> list[int]:
    """id_hash of each record, in one comprehension (the committer's per-event cost)."""
    return [hash((record.source_id, record.message_id)) for record in records]


class RecentIds:
    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._seen: set[int] = set()
        self._by_minute: deque[tuple[int, list[int]]] = deque()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, key: int) -> bool:
        return key in self._seen

    def is_new(self, keys: Sequence[int]) -> bool:
        """True when none of `keys` is in the window and none repeats: the usual group."""
        return self._seen.isdisjoint(keys) and len(set(keys)) == len(keys)

    def add(self, key: int, received_ms: int) -> None:
        self._bucket(received_ms // 60_000).append(key)
        self._seen.add(key)

    def add_many(self, keys: Sequence[int], received_ms: Sequence[int]) -> None:
        """Add a committed group; its events almost always share their minute."""
        minute = min(received_ms) // 60_000
        if minute != max(received_ms) // 60_000:
            for key, received in zip(keys, received_ms, strict=True):
                self.add(key, received)
            return
        self._bucket(minute).extend(keys)
        self._seen.update(keys)

    def _bucket(self, minute: int) -> list[int]:
        """The keys expiring with `minute`; late arrivals join the newest minute (kept longer)."""
        if not self._by_minute or self._by_minute[-1][0] < minute:
            self._by_minute.append((minute, []))
        return self._by_minute[-1][1]

    def expire(self, now_ms: int) -> int:
        horizon = (now_ms - self.window_ms) // 60_000
        forgotten = 0
        while self._by_minute and self._by_minute[0][0] < horizon:
            _, keys = self._by_minute.popleft()
            self._seen.difference_update(keys)
            forgotten += len(keys)
        return forgotten
