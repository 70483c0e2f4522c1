"""Every warehouse kept within `interval_s` of the log: `trackyard warehouse run`, and serve's
background child (background.py).

Micro-batches by time and count: a warehouse is synced when it is behind and its last
attempt is `interval_s` old, or at once when `batch_events` events wait. Loads run on a
thread, one warehouse after another, so ingest never waits for them. A failed sync is
recorded (see `trackyard warehouse status`) and tried again an interval later. On
shutdown the batch being loaded finishes (or rolls back with the process) and no next
batch starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from trackyard.store import Store
from trackyard.warehouse.loader import Loader
from trackyard.warehouse.registry import WarehouseConfig
from trackyard.warehouse.service import configured

log = logging.getLogger(__name__)

TICK_S = 1.0


class WarehouseRunner:
    def __init__(
        self,
        store: Store,
        builtin: WarehouseConfig | None,
        interval_s: float,
        batch_events: int,
    ) -> None:
        self.store = store
        self.builtin = builtin
        self.interval_s = interval_s
        self.batch_events = batch_events
        self._last_attempt: dict[str, float] = {}
        self._stop = threading.Event()

    async def run(self) -> None:
        try:
            while True:
                try:
                    due = await asyncio.to_thread(self._due)
                except Exception:
                    log.exception("could not read the warehouses; retrying")
                    due = []
                for config in due:
                    await self._sync(config)
                await asyncio.sleep(min(TICK_S, self.interval_s))
        finally:
            self._stop.set()

    def _due(self) -> list[WarehouseConfig]:
        head = self.store.head()
        now = time.monotonic()
        due = []
        for config in configured(self.store, self.builtin):
            lag = head - (self.store.get_position(config.consumer) or 0)
            waited = now - self._last_attempt.get(config.name, float("-inf"))
            if lag > 0 and (waited >= self.interval_s or lag >= self.batch_events):
                due.append(config)
        return due

    async def _sync(self, config: WarehouseConfig) -> None:
        self._last_attempt[config.name] = time.monotonic()
        loader = Loader(self.store, config, self.batch_events)
        task = asyncio.ensure_future(asyncio.to_thread(loader.sync, self._stop))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            self._stop.set()
            await task  # the batch in progress finishes; no next one starts
            raise
        if result.events:
            log.info("warehouse %s: loaded %d events (%d rows)", config.name, result.events, result.rows)
