"""The delivery engine: workers for the destinations' units of work, kept in step with the store.

Destinations are configuration in the store (added by the CLI, the API or the UI, from
any process). Each destination is split into `partitions` units (one by default); a unit
is worked by one process at a time, under a lease in the store. Every second the engine
heartbeats, renews the leases it holds (a unit whose lease cannot be renewed is stopped
at once), takes free units up to its fair share (units ÷ live worker processes), and
restarts workers whose destination's settings changed. A process that dies loses its
leases when they expire; another process continues from the last saved position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

from trackyard.delivery.recorder import Recorder
from trackyard.delivery.worker import DestinationWorker, LeaseHandle, WorkerOptions, consumer_name
from trackyard.destinations import registry
from trackyard.destinations.base import DestinationSettings, SettingsError, parse_settings
from trackyard.store import Store, StoreUnavailable
from trackyard.store.delivery import DestinationConfig

log = logging.getLogger(__name__)

WORKER_ROLES = ("all", "worker")


@dataclass(frozen=True)
class Unit:
    config: DestinationConfig
    settings: DestinationSettings
    partition: int
    partitions: int

    @property
    def lease_name(self) -> str:
        return f"destination:{self.config.id}:{self.partition}/{self.partitions}"


@dataclass
class _Running:
    unit: Unit
    worker: DestinationWorker
    task: asyncio.Task[None]
    lease: LeaseHandle


class DeliveryEngine:
    def __init__(
        self,
        store: Store,
        options: WorkerOptions | None = None,
        *,
        owner: str = "local",
        lease_ttl_s: float = 15.0,
        sync_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.options = options or WorkerOptions()
        self.owner = owner
        self.lease_ttl_s = lease_ttl_s
        self.sync_interval = sync_interval
        self.recorder = Recorder(store)
        self._running: dict[str, _Running] = {}

    def notify(self) -> None:
        """New events were committed: wake every worker (call on the event loop)."""
        for running in self._running.values():
            running.worker.wake.set()

    @property
    def held(self) -> list[str]:
        return sorted(self._running)

    async def run(self) -> None:
        recorder = asyncio.create_task(self.recorder.run())
        try:
            while True:
                try:
                    await self._sync()
                except Exception:
                    log.exception("could not synchronise the destinations; retrying")
                await asyncio.sleep(self.sync_interval)
        finally:
            await asyncio.gather(*(self._stop(name) for name in list(self._running)), return_exceptions=True)
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder

    async def _sync(self) -> None:
        # renewals first: the other work of a sync must not eat into the leases' local deadline
        for name, running in list(self._running.items()):
            if running.task.done() or not await self._renew(running):
                await self._stop(name)
        units = {unit.lease_name: unit for unit in await asyncio.to_thread(self._units)}
        for name, running in list(self._running.items()):
            unit = units.get(name)
            if unit is None or unit.config.updated_ms != running.unit.config.updated_ms:
                await self._stop(name)
        share = await asyncio.to_thread(self._fair_share, len(units))
        for name in sorted(self._running)[share:]:  # a process joined: hand units over
            await self._stop(name)
        for name, unit in units.items():
            if len(self._running) >= share:
                break
            if name not in self._running:
                await self._take(unit)
        await asyncio.to_thread(self._retire_old_consumers, list(units.values()))
        await asyncio.to_thread(self.store.prune_attempts)

    def _retire_old_consumers(self, units: list[Unit]) -> None:
        """After a change of partition count, forget the positions of the old layout once the
        new one has its own: a stale position would read as lag and hold back log retention."""
        positions = self.store.consumer_positions()
        current = {consumer_name(u.config, u.partition, u.partitions) for u in units}
        stale = []
        for config in {u.config.id: u.config for u in units}.values():
            layout = {c for c in current if c == config.consumer or c.startswith(f"{config.consumer}:p")}
            if not layout <= positions.keys():
                continue  # the new layout has not saved every position yet
            stale += [
                c
                for c in positions
                if (c == config.consumer or c.startswith(f"{config.consumer}:p")) and c not in layout
            ]
        if stale:
            self.store.delete_positions(stale)

    def _units(self) -> list[Unit]:
        units = []
        for config in self.store.list_destinations():
            if not config.enabled:
                continue
            try:
                destination = registry.get(config.type)
                settings = parse_settings(destination.Settings, config.settings, config.name)
            except (KeyError, SettingsError) as exc:
                log.error("destination %s cannot start: %s", config.name, exc)
                continue
            partitions = max(1, settings.partitions)
            units.extend(Unit(config, settings, p, partitions) for p in range(partitions))
        return units

    def _fair_share(self, units: int) -> int:
        """Units ÷ live worker processes, rounded up: work spreads out as processes join."""
        within_ms = int(self.lease_ttl_s * 2000)
        workers = [p for p in self.store.live_processes(within_ms) if p.role in WORKER_ROLES]
        return math.ceil(units / max(1, len(workers)))

    def _valid_until(self) -> float:
        """A local deadline a third of the TTL before the lease's expiry (clock drift, pauses).
        Taken *before* asking for the lease: the store counts the expiry from a moment at or
        after this one, however long the call then waits (a busy connection, a slow server)."""
        return time.monotonic() + self.lease_ttl_s * 2 / 3

    def _acquire(self, name: str) -> int | None:
        """Take or renew a lease; once more, on a fresh connection, when the store's connection
        was cut (taking a lease is idempotent for one owner), so a cut does not cost the lease."""
        ttl_ms = int(self.lease_ttl_s * 1000)
        try:
            return self.store.acquire(name, self.owner, ttl_ms)
        except StoreUnavailable:
            return self.store.acquire(name, self.owner, ttl_ms)

    async def _take(self, unit: Unit) -> None:
        valid_until = self._valid_until()
        generation = await asyncio.to_thread(self._acquire, unit.lease_name)
        if generation is None:
            return
        lease = LeaseHandle(unit.lease_name, self.owner, generation, valid_until)
        worker = DestinationWorker(
            self.store,
            unit.config,
            registry.get(unit.config.type),
            unit.settings,
            self.recorder,
            self.options,
            partition=unit.partition,
            partitions=unit.partitions,
            lease=lease,
        )
        task = asyncio.create_task(worker.run(), name=f"destination:{unit.config.name}:{unit.partition}")
        self._running[unit.lease_name] = _Running(unit, worker, task, lease)
        log.info("destination %s partition %d/%d started", unit.config.name, unit.partition, unit.partitions)

    async def _renew(self, running: _Running) -> bool:
        valid_until = self._valid_until()
        generation = await asyncio.to_thread(self._acquire, running.lease.name)
        if generation != running.lease.generation:
            log.warning(
                "lease %s lost (generation %s → %s)", running.lease.name, running.lease.generation, generation
            )
            running.lease.valid_until = 0.0
            return False
        running.lease.valid_until = valid_until
        return True

    async def _stop(self, name: str) -> None:
        running = self._running.pop(name)
        running.task.cancel()
        try:
            await running.task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("destination %s failed; restarting it", running.unit.config.name)
        await asyncio.to_thread(self.store.release, name, self.owner)
        log.info("destination %s partition %d stopped", running.unit.config.name, running.unit.partition)
