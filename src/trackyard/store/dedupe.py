"""The in-memory dedupe window of the embedded store.

A UNIQUE index on random messageIds caps SQLite at ~45,000 rows/s (every insert rewrites
a random index leaf; limits.md §3a). The embedded store has exactly one writer, so it
keeps the window in memory instead: 64-bit hashes of (source, messageId), rebuilt from
the log's tail at start-up. A false positive needs two different ids with the same 64-bit
hash (p ≈ n / 2^64 per lookup).

Memory decides the layout. A Python set costs ~88 bytes per id (a 32-byte int object, its
set slot and a list slot for expiry): 760 MB for 100 events/s over 24 h. So only the newest
ids, at most `HOT_LIMIT`, sit in a set. Older ones are frozen into sorted int64 arrays with
a directory, 9 bytes per id (`FrozenIds`), on a thread of their own while the full set
stays searchable. Arrays belong to an epoch, a 24th of the window and at least a minute:
an epoch's arrays merge as they grow (like a binary counter, so a few per epoch), and an
epoch is forgotten whole once its last minute has left the window. An id is remembered
for the window, and at most one epoch longer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

HOT_LIMIT = 1 << 16
"""Ids kept in the set before they are frozen into an array (~6 MB of set at most)."""

MAX_COOLING = 2
"""Sets waiting to be frozen before the committer waits for the freezer."""

MINUTE_MS = 60_000
EPOCHS_PER_WINDOW = 24


class _Identified(Protocol):
    source_id: int
    message_id: str


def id_hash(source_id: int, message_id: str) -> int:
    # Python's string hash is SipHash, randomised per process, which is fine: the window
    # lives only in this process and is rebuilt from the log when it starts.
    return hash((source_id, message_id))


def id_hashes(records: Sequence[_Identified]) -> list[int]:
    """id_hash of each record, in one comprehension (the committer's per-event cost)."""
    return [hash((record.source_id, record.message_id)) for record in records]


_SIGN = np.uint64(1 << 63)
_HIGH = np.uint64(32)


def top_bits(keys: np.ndarray) -> np.ndarray:
    """The top 32 bits of each int64 key, sign flipped so that they order as the keys do."""
    return (keys.view(np.uint64) ^ _SIGN) >> _HIGH


class FrozenIds:
    """A sorted array of ids and a directory of where each of its `len / 4` buckets starts.

    A plain binary search costs ~12 dependent cache misses per key in an array of millions
    (~0.45 µs per key, measured). Here a key's bucket comes from its top 32 bits (ids are
    uniform hashes, so ~4 per bucket), and one gather compares the key with as many ids from
    its bucket's start as the fullest bucket holds (~16): ~3 independent cache misses.
    """

    PER_BUCKET = 4

    def __init__(self, keys: np.ndarray) -> None:
        """`keys`: sorted int64."""
        self.keys = keys
        buckets = max(1, len(keys) // self.PER_BUCKET)
        self._buckets = np.uint64(buckets)
        # Bucket b starts at the first key whose top bits t have t * buckets >> 32 >= b,
        # i.e. t >= ceil(b * 2^32 / buckets): found by searching for each bucket's smallest
        # possible key, with no temporary as large as the keys (merges are what peak RSS is).
        first_top = ((np.arange(buckets, dtype=np.uint64) << _HIGH) + (self._buckets - 1)) // self._buckets
        first_key = ((first_top << _HIGH) ^ _SIGN).view(np.int64)
        offsets = np.int32 if len(keys) < 2**31 else np.int64
        self._starts = np.empty(buckets + 1, dtype=offsets)
        self._starts[:-1] = keys.searchsorted(first_key)
        self._starts[-1] = len(keys)
        widest = int(np.diff(self._starts).max())
        self._span = np.arange(max(1, widest), dtype=offsets)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self._starts.nbytes

    def _bucket_of(self, top: np.ndarray) -> np.ndarray:
        """Monotone in the key: its top bits scaled to the bucket count."""
        return top * self._buckets >> _HIGH

    def present(self, wanted: np.ndarray, top: np.ndarray) -> np.ndarray:
        """The positions in `wanted` (int64, with their `top_bits`) of the ids held here."""
        start = self._starts[self._bucket_of(top)]
        near = self.keys.take(start[:, None] + self._span, mode="clip")
        found = np.flatnonzero(near == wanted[:, None]) // len(self._span)
        # Clipped past the end, the last id repeats: one position may match more than once.
        return np.unique(found) if len(found) > 1 else found


@functools.cache
def freezer() -> ThreadPoolExecutor:
    """One thread for the process: freezing and merging run beside the commits, not in them.

    A merge of 1.5 M ids takes ~100 ms, mostly in numpy calls that release the GIL; inside
    the commit path it showed as a p99 of 100-150 ms at half the peak rate.
    """
    return ThreadPoolExecutor(1, thread_name_prefix="dedupe-freezer")


@dataclass(eq=False)
class _Job:
    epoch: int
    sets: list[set[int]]
    arrays: list[FrozenIds]
    future: Future[FrozenIds]


def _build(sets: Sequence[set[int]], arrays: Sequence[FrozenIds]) -> FrozenIds:
    parts = [np.fromiter(ids, dtype=np.int64, count=len(ids)) for ids in sets]
    merged = np.concatenate(parts + [array.keys for array in arrays])
    merged.sort()
    return FrozenIds(merged)


def _among(part: object, parts: Sequence[object]) -> bool:
    return any(part is other for other in parts)


def _suffix_to_merge(arrays: Sequence[FrozenIds], incoming: int) -> int:
    """Where the newest arrays worth merging with `incoming` ids start: like a binary counter,
    an array joins while it is no bigger than everything newer, so sizes grow geometrically."""
    total, start = incoming, len(arrays)
    while start > 0 and len(arrays[start - 1]) <= total:
        start -= 1
        total += len(arrays[start])
    return start


class RecentIds:
    """The window: `hot` (a set) → `cooling` (sets being frozen) → `frozen` (arrays).

    Every public method first takes in a finished freeze, then may start the next: the
    thread that commits is the only one that changes these, so lookups need no lock.
    """

    def __init__(self, window_ms: int, hot_limit: int = HOT_LIMIT) -> None:
        self.window_ms = window_ms
        self.hot_limit = hot_limit
        self.epoch_minutes = max(1, window_ms // MINUTE_MS // EPOCHS_PER_WINDOW)
        self._hot: set[int] = set()
        self._hot_epoch = -1
        self._cooling: list[tuple[int, set[int]]] = []  # (epoch, ids), oldest first
        self._frozen: dict[int, list[FrozenIds]] = {}  # epoch -> arrays, oldest epoch first
        self._forgotten_below = -1  # epochs below this were expired
        self._job: _Job | None = None

    def __len__(self) -> int:
        self._take_in()
        return len(self._hot) + sum(len(ids) for _, ids in self._cooling) + self.frozen_ids

    def __contains__(self, key: int) -> bool:
        return self.known([key])[0]

    @property
    def cooling_sets(self) -> int:
        return len(self._cooling)

    @property
    def frozen_arrays(self) -> int:
        return sum(len(arrays) for arrays in self._frozen.values())

    @property
    def frozen_ids(self) -> int:
        return sum(len(array) for arrays in self._frozen.values() for array in arrays)

    @property
    def frozen_bytes(self) -> int:
        return sum(array.nbytes for arrays in self._frozen.values() for array in arrays)

    def is_new(self, keys: Sequence[int]) -> bool:
        """True when none of `keys` is in the window and none repeats: the usual group."""
        self._take_in()
        if len(set(keys)) != len(keys) or not self._hot.isdisjoint(keys):
            return False
        if not all(ids.isdisjoint(keys) for _, ids in self._cooling):
            return False
        return not any(len(found) for found in self._frozen_matches(keys))

    def known(self, keys: Sequence[int]) -> list[bool]:
        """For each key, whether the window holds it (repeats within `keys` are not looked at)."""
        self._take_in()
        sets = [self._hot, *(ids for _, ids in self._cooling)]
        known = [any(key in ids for ids in sets) for key in keys]
        for found in self._frozen_matches(keys):
            for position in found.tolist():
                known[position] = True
        return known

    def _frozen_matches(self, keys: Sequence[int]) -> Iterator[np.ndarray]:
        """Per frozen array, lazily, the positions in `keys` of the ids it holds."""
        if not self._frozen:
            return
        wanted = np.fromiter(keys, dtype=np.int64, count=len(keys))
        top = top_bits(wanted)
        for arrays in self._frozen.values():
            for array in arrays:
                yield array.present(wanted, top)

    def add(self, key: int, received_ms: int) -> None:
        self._take_in()
        self._enter_epoch(self._epoch(received_ms))
        self._hot.add(key)
        if len(self._hot) >= self.hot_limit:
            self._cool()

    def add_many(self, keys: Sequence[int], received_ms: Sequence[int]) -> None:
        """Add a committed group; its events almost always share their epoch."""
        epoch = self._epoch(min(received_ms))
        if epoch != self._epoch(max(received_ms)):
            for key, received in zip(keys, received_ms, strict=True):
                self.add(key, received)
            return
        self._take_in()
        self._enter_epoch(epoch)
        self._hot.update(keys)
        if len(self._hot) >= self.hot_limit:
            self._cool()

    def settle(self) -> None:
        """Wait until every set is frozen and no merge is due (start-up and tests)."""
        self._take_in()
        while self._job is not None:
            self._job.future.result()
            self._take_in()

    def _epoch(self, received_ms: int) -> int:
        return received_ms // MINUTE_MS // self.epoch_minutes

    def _enter_epoch(self, epoch: int) -> None:
        """Late arrivals join the newest epoch (kept longer); a newer one closes the last."""
        if epoch > self._hot_epoch:
            self._cool()
            self._hot_epoch = epoch

    def _cool(self) -> None:
        if self._hot:
            self._cooling.append((self._hot_epoch, self._hot))
            self._hot = set()
            self._start_job()
        # Back-pressure, so that sets cannot pile up (at start-up the log's tail comes faster
        # than it freezes); a commit waits only when the freezer is two sets behind.
        while len(self._cooling) > MAX_COOLING and self._job is not None:
            self._job.future.result()
            self._take_in()

    def _take_in(self) -> None:
        """Put a finished job's array in place of what it was built from.

        While a job runs its epoch's arrays do not change (one job at a time, and only jobs
        add arrays), except that expiry may drop the whole epoch: then the result goes too.
        """
        job = self._job
        if job is None or not job.future.done():
            return
        self._job = None
        try:
            built = job.future.result()
        except Exception:  # e.g. MemoryError: the parts stay searchable as they are
            log.exception("dedupe window: freezing %d ids failed", sum(map(len, job.sets)))
            return
        self._cooling = [(epoch, ids) for epoch, ids in self._cooling if not _among(ids, job.sets)]
        if job.epoch >= self._forgotten_below:
            arrays = self._frozen.get(job.epoch, [])
            self._frozen[job.epoch] = [a for a in arrays if not _among(a, job.arrays)] + [built]
        self._start_job()

    def _start_job(self) -> None:
        """Freeze the oldest cooling set (with the arrays worth merging), else compact a closed epoch."""
        if self._job is not None:
            return
        if self._cooling:
            epoch, ids = self._cooling[0]
            arrays = self._frozen.get(epoch, [])
            merging = arrays[_suffix_to_merge(arrays, len(ids)) :]
            self._submit(epoch, [ids], merging)
            return
        for epoch, arrays in self._frozen.items():
            if epoch < self._hot_epoch and len(arrays) > 1:
                self._submit(epoch, [], list(arrays))
                return

    def _submit(self, epoch: int, sets: list[set[int]], arrays: list[FrozenIds]) -> None:
        self._job = _Job(epoch, sets, arrays, freezer().submit(_build, sets, arrays))

    def expire(self, now_ms: int) -> int:
        """Forget every epoch whose last minute is older than the window; how many ids went."""
        self._take_in()
        horizon = (now_ms - self.window_ms) // MINUTE_MS
        self._forgotten_below = max(self._forgotten_below, horizon // self.epoch_minutes)
        forgotten = 0
        for epoch in [epoch for epoch in self._frozen if epoch < self._forgotten_below]:
            forgotten += sum(len(array) for array in self._frozen.pop(epoch))
        forgotten += sum(len(ids) for epoch, ids in self._cooling if epoch < self._forgotten_below)
        self._cooling = [(epoch, ids) for epoch, ids in self._cooling if epoch >= self._forgotten_below]
        if self._hot and self._hot_epoch < self._forgotten_below:
            forgotten += len(self._hot)
            self._hot = set()
        return forgotten
