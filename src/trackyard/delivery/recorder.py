"""Buffers what workers observe (attempts, per-minute counts, worker states, re-sent dead
letters) and writes it to the store once a second, in one transaction, off the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from trackyard.store import Store
from trackyard.store.delivery import Attempt, DeadLetter, MinuteCounts, WorkerState

log = logging.getLogger(__name__)

MAX_BUFFERED_ATTEMPTS = 50_000


class Recorder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._attempts: list[Attempt] = []
        self._counts: dict[tuple[int, int], MinuteCounts] = defaultdict(MinuteCounts)
        self._states: dict[int, WorkerState] = {}
        self._resolved: list[int] = []
        self._buried: list[DeadLetter] = []
        self.dropped_attempts = 0

    def attempt(self, attempt: Attempt) -> None:
        if len(self._attempts) >= MAX_BUFFERED_ATTEMPTS:
            self.dropped_attempts += 1  # the store is not keeping up; counts stay exact
            return
        self._attempts.append(attempt)

    def count(self, destination_id: int, outcome: str, n: int = 1) -> None:
        counts = self._counts[(destination_id, int(time.time() // 60))]
        setattr(counts, outcome, getattr(counts, outcome) + n)

    def state(self, destination_id: int, retrying: int, in_flight: int) -> None:
        self._states[destination_id] = WorkerState(destination_id, retrying, in_flight)

    def dead_letter_settled(self, dead_letter_id: int, delivered: bool) -> None:
        if delivered:
            self._resolved.append(dead_letter_id)

    def dead_letter_failed(self, letter: DeadLetter) -> None:
        self._buried.append(letter)

    def flush(self) -> None:
        attempts, self._attempts = self._attempts, []
        counts, self._counts = dict(self._counts), defaultdict(MinuteCounts)
        states, self._states = list(self._states.values()), {}
        resolved, self._resolved = self._resolved, []
        buried, self._buried = self._buried, []
        try:
            if attempts or counts or states:
                self.store.record_delivery(attempts, counts, states)
            if resolved:
                self.store.resolve_dead_letters(resolved)
            if buried:
                self.store.bury_dead_letters(
                    [(d.id, d.reason, d.status, d.request, d.response) for d in buried]
                )
        except Exception:
            log.exception("could not record delivery; keeping the records for the next flush")
            self._attempts[:0] = attempts
            for key, value in counts.items():
                self._counts[key].add(value)
            self._resolved[:0] = resolved
            self._buried[:0] = buried

    async def run(self, interval: float = 1.0) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                await asyncio.to_thread(self.flush)
        finally:
            await asyncio.shield(asyncio.to_thread(self.flush))
