"""Replay: a job that sends one source's history over a range to one destination, through
the delivery engine (a DestinationWorker whose input is the archive and the log).

Replayed events keep their messageId and timestamps; their `integrations` object becomes
`{"All": false, "<destination>": true}` (Segment's replay) and their retry budget starts
when they are read. Only the replay's destination receives them.

Who runs a job: whoever holds its lease (`lease_s`, renewed every third of it). The CLI
creates a job already leased to itself and runs it; a `trackyard serve` runs jobs whose
lease has expired or was never taken (`--detach`, the API, a CLI that was killed). The
cursor and the counts settled up to it are saved every 0.2 s, so a restarted job
resumes where it stopped: only events in flight then are sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trackyard.archive.history import History, Range
from trackyard.archive.storage import ArchiveStorage
from trackyard.delivery.recorder import Recorder
from trackyard.delivery.worker import PAGE_SIZE, DestinationWorker, Item, WorkerOptions
from trackyard.destinations import registry
from trackyard.destinations.base import Destination, DestinationSettings, Payload, Request, parse_settings
from trackyard.spec import now_ms
from trackyard.store import Store, StoredEvent
from trackyard.store.archive import ReplayCounts, ReplayJob
from trackyard.store.delivery import DestinationConfig

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 15.0


class ReplayBusy(Exception):
    """Another runner holds the job's lease, or the job has ended."""


def event_name(event: dict[str, Any]) -> str:
    """What `--event` matches and the dry run counts: a track's event, a page's or screen's
    name, else the call type."""
    kind = event.get("type", "")
    if kind == "track":
        return str(event.get("event", ""))
    if kind in ("page", "screen") and event.get("name"):
        return str(event["name"])
    return str(kind)


@dataclass(frozen=True)
class Selection:
    """`--event` and `--type`: an event is replayed when it matches either list (or both are empty)."""

    events: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def matches(self, event: dict[str, Any]) -> bool:
        if not self.events and not self.types:
            return True
        return event.get("type") in self.types or (bool(self.events) and event_name(event) in self.events)


@dataclass
class Tally:
    read: int = 0
    delivered: int = 0
    failed: int = 0
    filtered: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def counts(self, base: ReplayCounts | None = None) -> ReplayCounts:
        base = base or ReplayCounts()
        read, filtered = base.read + self.read, base.filtered + self.filtered
        return ReplayCounts(
            read=read,
            sent=base.sent + self.read - self.filtered,
            delivered=base.delivered + self.delivered,
            failed=base.failed + self.failed,
            filtered=filtered,
        )


class Pacer:
    """`--rate`: events are read no faster than `rate` per second (0: as fast as the tool takes them)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started: float | None = None
        self.taken = 0

    async def take(self, count: int) -> None:
        if self.rate <= 0:
            return
        if self.started is None:
            self.started = time.monotonic()
        delay = self.started + self.taken / self.rate - time.monotonic()
        self.taken += count
        if delay > 0:
            await asyncio.sleep(delay)


def replay_range(job: ReplayJob) -> Range:
    return Range(job.source_id, job.log_from, job.last_seq, job.since_ms, job.until_ms)


class _Pages:
    """Cuts the history's batches into pages of `size` events."""

    def __init__(self, batches: Iterator[list[StoredEvent]], size: int) -> None:
        self.batches = batches
        self.size = size
        self.rest: list[StoredEvent] = []

    def next(self) -> list[StoredEvent]:
        """The next page; an empty one at the end of the range."""
        page = self.rest
        while len(page) < self.size:
            batch = next(self.batches, None)
            if batch is None:
                break
            page = page + batch if page else batch
        page, self.rest = page[: self.size], page[self.size :]
        return page

    def close(self) -> None:
        self.batches.close()  # type: ignore[attr-defined]


class ReplayWorker(DestinationWorker):
    """A destination worker whose input is a job's range, ending when the range is read.

    Counting: `live` counts what this process did (for progress). `committed` holds the
    counts of every event at or before the saved cursor, so a job resumed after a crash
    still reconciles exactly: read = sent + filtered, sent = delivered + failed.
    """

    resends_dead_letters = False

    def __init__(
        self,
        store: Store,
        config: DestinationConfig,
        destination: Destination[Any],
        settings: DestinationSettings,
        recorder: Recorder,
        options: WorkerOptions,
        *,
        job: ReplayJob,
        history: History,
        owner: str,
    ) -> None:
        super().__init__(store, config, destination, settings, recorder, options)
        self.job = job
        self.history = history
        self.owner = owner
        self.label = f"{config.name} (replay {job.id})"
        self.selection = Selection(frozenset(job.events), frozenset(job.types))
        self.live = Tally()
        self.committed = Tally()
        self.lost_lease = False
        self.page_size = PAGE_SIZE if job.rate <= 0 else max(1, min(PAGE_SIZE, int(job.rate / 4)))
        self._pacer = Pacer(job.rate)
        self._pages: _Pages | None = None
        self._prefetch: asyncio.Future[list[StoredEvent]] | None = None
        self._ledger: deque[int] = deque()  # positions read, in order, not yet committed
        self._taking: deque[int] = deque()  # positions of the page the worker is taking
        self._current: int | None = None  # the position of the event being taken
        self._outcomes: dict[int, str] = {}  # position -> delivered, failed or filtered
        self._failed_parts: set[int] = set()
        self._integrations = {"All": False, destination.name: True}
        self._page_read_ms = now_ms()

    # -- the input -------------------------------------------------------------------------
    async def _start_position(self) -> int:
        return self.job.cursor

    async def _next_page(self) -> list[StoredEvent] | None:
        """The next page of the range; the one after it is read meanwhile, on a thread, so
        that reading the archive overlaps with translating and sending."""
        if self._prefetch is None:
            self._prefetch = self._read_ahead()
        page = await self._prefetch
        if not page:
            self._prefetch = None
            return None
        self._prefetch = self._read_ahead()
        self._page_read_ms = now_ms()
        positions = [stored.seq for stored in page]
        self._ledger.extend(positions)
        self._taking.extend(positions)
        self.live.read += len(page)
        await self._pacer.take(len(page))
        self.wake.set()  # a short page is not the end of the range: no idling for new events
        return page

    def _read_ahead(self) -> asyncio.Future[list[StoredEvent]]:
        if self._pages is None:
            self._pages = _Pages(self.history.batches(self.job.cursor), self.page_size)
        return asyncio.ensure_future(asyncio.to_thread(self._pages.next))

    async def aclose(self) -> None:
        """Wait for a read in progress, then close the archive file being read."""
        if self._prefetch is not None:
            with contextlib.suppress(Exception):
                await self._prefetch
        if self._pages is not None:
            self._pages.close()

    def _prepare(self, event: dict[str, Any]) -> dict[str, Any]:
        """Called once per event, in page order, just before `_payloads`: the event's position
        is therefore the next of the page."""
        self._current = self._taking.popleft() if self._taking else None
        event["integrations"] = self._integrations  # one shared dict: nothing changes it
        return event

    def _origin_ms(self, stored: StoredEvent) -> int:
        """The retry budget of a replayed event starts when its page was read."""
        return self._page_read_ms

    def _payloads(self, event: dict[str, Any]) -> list[Payload]:
        payloads = super()._payloads(event) if self.selection.matches(event) else []
        if not payloads:
            self.live.filtered += 1
            if self._current is not None:
                self._outcomes[self._current] = "filtered"
        return payloads

    def translate(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[Payload]]:
        """The event as replayed and its payloads, as delivery would make them (for dry runs)."""
        prepared = self._prepare(event)
        return prepared, self._payloads(prepared)

    def describe(self, request: Request) -> str:
        """A request as text, secrets redacted."""
        return self._request_excerpt(request)

    def _settle(self, item: Item, outcome: str) -> None:
        position = item.tag.seq
        pending = self.pending.get(position)
        if pending is not None:
            if outcome == "failed":
                self._failed_parts.add(position)
            if pending.payloads <= 1:
                final = "failed" if position in self._failed_parts else "delivered"
                self._failed_parts.discard(position)
                self._outcomes[position] = final
                self.live.add(final)
        super()._settle(item, outcome)

    # -- the cursor --------------------------------------------------------------------------
    def _persist_position(self, position: int) -> None:
        self.save_progress(position)

    def save_progress(self, position: int | None = None) -> None:
        """Commit the counts of events settled up to `position` and save it as the cursor,
        lowered to just before the first event whose outcome is not known yet (one the
        worker is taking at this very moment, on the event loop)."""
        cursor = self.position() if position is None else position
        while self._ledger and self._ledger[0] <= cursor:
            outcome = self._outcomes.pop(self._ledger[0], None)
            if outcome is None:
                cursor = self._ledger[0] - 1
                break
            self._ledger.popleft()
            self.committed.read += 1
            self.committed.add(outcome)
        counts = self.committed.counts(self.job.counts)
        pin = max(cursor, self.job.log_from)
        if not self.store.save_replay_progress(self.job.id, self.owner, cursor, counts, pin, now_ms()):
            self.lost_lease = True

    def progress(self) -> ReplayCounts:
        """Counts for display: saved ones plus what this process did since it started."""
        return self.live.counts(self.job.counts)


class ReplayRun:
    """Runs one job to its end while holding its lease."""

    def __init__(
        self,
        store: Store,
        storage: ArchiveStorage | None,
        job_id: int,
        owner: str,
        options: WorkerOptions | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.store = store
        self.storage = storage
        self.job_id = job_id
        self.owner = owner
        self.options = options or WorkerOptions()
        self.lease_s = lease_s
        self.worker: ReplayWorker | None = None

    def progress(self) -> ReplayCounts | None:
        return self.worker.progress() if self.worker else None

    async def run(self) -> ReplayJob:
        """Run to the end; returns the job as it ended (done, cancelled, failed) or, when
        this runner lost its lease, as another runner now has it. Raises ReplayBusy when the
        lease cannot be taken."""
        leased = await asyncio.to_thread(
            self.store.lease_replay_job, self.job_id, self.owner, int(self.lease_s * 1000), now_ms()
        )
        if not leased:
            raise ReplayBusy(f"replay {self.job_id} is being run by another process, or has ended")
        job = await asyncio.to_thread(self.store.get_replay_job, self.job_id)
        try:
            self.worker = await asyncio.to_thread(self._build_worker, job)
        except Exception as exc:
            await asyncio.to_thread(self.store.finish_replay_job, job.id, "failed", now_ms(), str(exc))
            return await asyncio.to_thread(self.store.get_replay_job, job.id)
        try:
            await self._deliver(self.worker)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.to_thread(self.store.release_replay_job, job.id, self.owner))
            raise
        return await asyncio.to_thread(self.store.get_replay_job, job.id)

    def _build_worker(self, job: ReplayJob) -> ReplayWorker:
        config = next((c for c in self.store.list_destinations() if c.id == job.destination_id), None)
        if config is None:
            raise LookupError(f"the destination of replay {job.id} no longer exists")
        destination = registry.get(config.type)
        settings = parse_settings(destination.Settings, config.settings, config.name)
        history = History(self.store, self.storage, replay_range(job))
        recorder = Recorder(self.store)
        return ReplayWorker(
            self.store,
            config,
            destination,
            settings,
            recorder,
            self.options,
            job=job,
            history=history,
            owner=self.owner,
        )

    async def _deliver(self, worker: ReplayWorker) -> None:
        recording = asyncio.create_task(worker.recorder.run())
        delivering = asyncio.create_task(worker.run())
        watching = asyncio.create_task(self._watch(worker))
        try:
            done, _ = await asyncio.wait({delivering, watching}, return_when=asyncio.FIRST_COMPLETED)
            if delivering in done:
                await self._finish(worker, delivering)
        finally:
            for task in (delivering, watching, recording):
                task.cancel()
            await asyncio.gather(delivering, watching, recording, return_exceptions=True)
            await worker.aclose()

    async def _finish(self, worker: ReplayWorker, delivering: asyncio.Task[None]) -> None:
        error = delivering.exception()
        if error is not None:
            log.error("replay %d failed", self.job_id, exc_info=error)
            await asyncio.to_thread(self.store.finish_replay_job, self.job_id, "failed", now_ms(), str(error))
            return
        await asyncio.to_thread(worker.save_progress)
        if not worker.lost_lease:
            await asyncio.to_thread(self.store.finish_replay_job, self.job_id, "done", now_ms())

    async def _watch(self, worker: ReplayWorker) -> None:
        """Renew the lease; return (stopping delivery) when the job was cancelled or taken over."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            renewed = await asyncio.to_thread(
                self.store.lease_replay_job, self.job_id, self.owner, int(self.lease_s * 1000), now_ms()
            )
            if not renewed or worker.lost_lease:
                log.info("replay %d: stopped (cancelled, or taken over by another runner)", self.job_id)
                return


class ReplayScheduler:
    """The server's role: run active jobs nobody holds (a few at a time)."""

    def __init__(
        self,
        store: Store,
        storage: ArchiveStorage | None,
        owner: str,
        options: WorkerOptions | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        max_running: int = 2,
        poll_s: float = 2.0,
    ) -> None:
        self.store = store
        self.storage = storage
        self.owner = owner
        self.options = options
        self.lease_s = lease_s
        self.max_running = max_running
        self.poll_s = poll_s
        self.running: dict[int, asyncio.Task[ReplayJob]] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._start_claimable()
                except Exception:
                    log.exception("replay scheduler: could not read the jobs; retrying")
                await asyncio.sleep(self.poll_s)
        finally:
            for task in self.running.values():
                task.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _start_claimable(self) -> None:
        for job_id, task in list(self.running.items()):
            if task.done():
                del self.running[job_id]
                error = None if task.cancelled() else task.exception()
                if error is not None and not isinstance(error, ReplayBusy):
                    log.error("replay %d stopped with an error", job_id, exc_info=error)
        for job_id in await asyncio.to_thread(self.store.claimable_replay_jobs, now_ms()):
            if job_id in self.running or len(self.running) >= self.max_running:
                continue
            run = ReplayRun(self.store, self.storage, job_id, self.owner, self.options, self.lease_s)
            self.running[job_id] = asyncio.create_task(run.run(), name=f"replay:{job_id}")
            log.info("replay %d: started", job_id)
