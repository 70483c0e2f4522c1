"""Write key → source, cached in memory and refreshed from the store.

A miss reloads at once (so `trackyard source create` takes effect while a server runs),
but at most once per `miss_reload_interval`, so random keys cannot hammer the store.
"""

from __future__ import annotations

import asyncio
import time

from trackyard.store import Source, Store


class SourceDirectory:
    def __init__(self, store: Store, miss_reload_interval: float = 0.5) -> None:
        self.store = store
        self.miss_reload_interval = miss_reload_interval
        self._by_key: dict[str, Source] = {}
        self._loaded_at = 0.0

    def reload(self) -> None:
        self._by_key = {source.write_key: source for source in self.store.list_sources() if source.enabled}
        self._loaded_at = time.monotonic()

    async def lookup(self, write_key: str) -> Source | None:
        source = self._by_key.get(write_key)
        if source is None and time.monotonic() - self._loaded_at >= self.miss_reload_interval:
            await asyncio.to_thread(self.reload)
            source = self._by_key.get(write_key)
        return source
