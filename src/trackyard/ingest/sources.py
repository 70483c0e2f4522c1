"""Write key → source, cached in memory and refreshed from the store.

A miss reloads (so `trackyard source create` takes effect while a server runs), but at
most once per `miss_reload_interval`, so random keys cannot hammer the store. A miss that
arrives too soon after a reload waits for the next one instead of being refused: an SDK
drops events answered 401, so a key created a moment ago must never get one.
"""

from __future__ import annotations

import asyncio
import threading
import time

from trackyard.store import Source, Store


class SourceDirectory:
    def __init__(self, store: Store, miss_reload_interval: float = 0.5) -> None:
        self.store = store
        self.miss_reload_interval = miss_reload_interval
        self._by_key: dict[str, Source] = {}
        self._loaded_at = float("-inf")  # when the current snapshot's read began
        self._miss_lock = asyncio.Lock()
        self._swap_lock = threading.Lock()  # reloads run on worker threads, possibly two at once

    def reload(self) -> None:
        started = time.monotonic()
        by_key = {source.write_key: source for source in self.store.list_sources() if source.enabled}
        with self._swap_lock:
            if started >= self._loaded_at:  # never replace a newer snapshot with an older one
                self._by_key = by_key
                self._loaded_at = started

    async def lookup(self, write_key: str) -> Source | None:
        source = self._by_key.get(write_key)
        if source is None:
            await self._reload_after_miss(time.monotonic())
            source = self._by_key.get(write_key)
        return source

    async def _reload_after_miss(self, missed_at: float) -> None:
        """Return once a snapshot read after `missed_at` is in place; concurrent misses share reloads."""
        async with self._miss_lock:
            if self._loaded_at >= missed_at:
                return
            wait = self._loaded_at + self.miss_reload_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await asyncio.to_thread(self.reload)
