"""The delivery engine: one worker per enabled destination, kept in step with the store.

Destinations are configuration in the store (added by the CLI, the API or the UI, from
any process); the engine re-reads it every second and starts, restarts (after a
settings change) or stops workers to match.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from trackyard.delivery.recorder import Recorder
from trackyard.delivery.worker import DestinationWorker, WorkerOptions
from trackyard.destinations import registry
from trackyard.destinations.base import SettingsError, parse_settings
from trackyard.store import Store
from trackyard.store.delivery import DestinationConfig

log = logging.getLogger(__name__)


@dataclass
class _Running:
    config: DestinationConfig
    worker: DestinationWorker
    task: asyncio.Task[None]


class DeliveryEngine:
    def __init__(
        self, store: Store, options: WorkerOptions | None = None, sync_interval: float = 1.0
    ) -> None:
        self.store = store
        self.options = options or WorkerOptions()
        self.sync_interval = sync_interval
        self.recorder = Recorder(store)
        self._running: dict[int, _Running] = {}

    def notify(self) -> None:
        """New events were committed: wake every worker (call on the event loop)."""
        for running in self._running.values():
            running.worker.wake.set()

    async def run(self) -> None:
        recorder = asyncio.create_task(self.recorder.run())
        try:
            while True:
                try:
                    await self._sync()
                except Exception:
                    log.exception("could not read the destinations; retrying")
                await asyncio.sleep(self.sync_interval)
        finally:
            await asyncio.gather(*(self._stop(i) for i in list(self._running)), return_exceptions=True)
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    async def _sync(self) -> None:
        configs = {c.id: c for c in await asyncio.to_thread(self.store.list_destinations) if c.enabled}
        for destination_id, running in list(self._running.items()):
            config = configs.get(destination_id)
            if config is None or config.updated_ms != running.config.updated_ms or running.task.done():
                await self._stop(destination_id)
        for destination_id, config in configs.items():
            if destination_id not in self._running:
                self._start(config)
        await asyncio.to_thread(self.store.prune_attempts)

    def _start(self, config: DestinationConfig) -> None:
        try:
            destination = registry.get(config.type)
            settings = parse_settings(destination.Settings, config.settings, config.name)
        except (KeyError, SettingsError) as exc:
            log.error("destination %s cannot start: %s", config.name, exc)
            return
        worker = DestinationWorker(self.store, config, destination, settings, self.recorder, self.options)
        task = asyncio.create_task(worker.run(), name=f"destination:{config.name}")
        self._running[config.id] = _Running(config, worker, task)
        log.info("destination %s (%s) started", config.name, config.type)

    async def _stop(self, destination_id: int) -> None:
        running = self._running.pop(destination_id)
        running.task.cancel()
        try:
            await running.task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("destination %s failed; restarting it", running.config.name)
        log.info("destination %s stopped", running.config.name)
