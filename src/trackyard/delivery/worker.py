"""One destination's consumer of the log: route, translate, batch, send, retry, record.

Position and crashes: the worker reads the log ahead of its committed position and keeps
every read event *pending* until each of its payloads is settled (delivered, given up
into the dead letters, or filtered). The committed position is the seq just before the
oldest pending event, saved every POSITION_SAVE_S. After a crash, delivery resumes from
there, so only events in flight or settled in the last save interval can be delivered
twice (at-least-once); their dedupe ids (messageId-derived) let the tools drop the copies.

Retries: a request that gets a retryable answer is retried in place with exponential
backoff and full jitter, honouring Retry-After, until its oldest event is older than
`max_age` (4 h); the log is the retry buffer. While some requests retry, the others
keep flowing, up to a bounded window of pending events; a failing destination therefore
slows only itself. Permanent failures (other 4xx) go to the dead letters at once, with
the request sent and the response received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import orjson

from trackyard.delivery.batching import cut_batches
from trackyard.delivery.http import HTTPPool
from trackyard.delivery.metrics import CONSUMER_LAG, DELIVERY_EVENTS, END_TO_END_LATENCY, REQUEST_LATENCY
from trackyard.delivery.ratelimit import TokenBucket
from trackyard.delivery.recorder import Recorder
from trackyard.destinations.base import (
    Destination,
    DestinationSettings,
    Outcome,
    Payload,
    Request,
    Response,
    Skip,
    Verdict,
    secret_values,
)
from trackyard.pipeline import EventFilter, route
from trackyard.store import Store, StoredEvent, StoreUnavailable
from trackyard.store.delivery import Attempt, DeadLetter, DestinationConfig

log = logging.getLogger(__name__)

PAGE_SIZE = 2000
MAX_PENDING_EVENTS = 20_000
EXCERPT_BYTES = 2048
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 300.0
POSITION_SAVE_S = 0.2
RETRY_AFTER_CAP_S = 600.0  # a tool may ask for a pause; not for an unbounded one
DEAD_LETTER_RETRY_S = 0.5
DEAD_LETTER_RETRY_CAP_S = 30.0


class LeaseLost(Exception):
    """Another process now owns this worker's unit of work: stop without writing anything."""


@dataclass
class LeaseHandle:
    """The lease a worker holds on its unit; the engine renews it and moves `valid_until`."""

    name: str
    owner: str
    generation: int
    valid_until: float  # time.monotonic() deadline, a safety margin before the lease's expiry

    def check(self) -> None:
        if time.monotonic() >= self.valid_until:
            raise LeaseLost(f"lease {self.name} (generation {self.generation}) expired")


def consumer_name(config: DestinationConfig, partition: int, partitions: int) -> str:
    """The name of a destination partition's position; a single partition keeps the destination's own."""
    if partitions <= 1:
        return config.consumer
    return f"{config.consumer}:p{partition}of{partitions}"


def partition_of(event: dict[str, Any], partitions: int) -> int:
    """The partition of an event: a stable hash of its user, so one user's events stay in order."""
    if partitions <= 1:
        return 0
    key = event.get("userId") or event.get("anonymousId") or event.get("messageId") or ""
    return zlib.crc32(str(key).encode()) % partitions


@dataclass(frozen=True, slots=True)
class Tag:
    """Where a payload came from: a log event, or a dead letter being re-sent."""

    seq: int
    message_id: str
    origin_ms: int  # receivedAt, or the start of a re-send; max_age counts from here
    dead_letter_id: int = 0


@dataclass(slots=True)
class Item:
    tag: Tag
    endpoint: str
    body: Any


@dataclass
class WorkerOptions:
    max_age_s: float = 4 * 3600
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S


@dataclass
class _Pending:
    payloads: int


@dataclass
class DestinationWorker:
    store: Store
    config: DestinationConfig
    destination: Destination[Any]
    settings: DestinationSettings
    recorder: Recorder
    options: WorkerOptions = field(default_factory=WorkerOptions)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    partition: int = 0
    partitions: int = 1
    lease: LeaseHandle | None = None
    # False for a replay: the live worker of the destination owns re-sending its dead letters.
    resends_dead_letters: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.filters = EventFilter.from_json(self.config.filters)
        self.policy = self.destination.batching_policy(self.settings)
        rate = self.settings.rate_limit or self.destination.default_rate_limit
        self.bucket = TokenBucket(rate)
        self.slots = asyncio.Semaphore(max(1, self.settings.concurrency))
        self.secrets = [s for s in secret_values(self.settings) if len(s) >= 4]
        self.pending: dict[int, _Pending] = {}
        self.read_upto = 0
        self.saved_position = -1
        self.retrying = 0
        self.in_flight = 0
        self._room = asyncio.Event()
        self._buffer: list[Item] = []
        self._buffer_since = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[Any] | None = None
        # one worker per destination re-sends its dead letters: the first partition's
        self.resends_dead_letters = self.resends_dead_letters and self.partition == 0
        self.label = self.config.name
        self._counters = {
            outcome: DELIVERY_EVENTS.labels(self.label, outcome)
            for outcome in ("delivered", "retried", "failed", "filtered")
        }
        self._request_latency = REQUEST_LATENCY.labels(self.label)
        self._end_to_end = END_TO_END_LATENCY.labels(self.label)

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until cancelled, or until `_next_page` says the input is exhausted."""
        self._main = asyncio.current_task()
        if self.resends_dead_letters:
            await asyncio.to_thread(self.store.release_dead_letters, self.config.id)
        self.read_upto = self.saved_position = await self._start_position()
        async with HTTPPool(self.settings.concurrency, self.settings.timeout) as self.http:
            background = [asyncio.create_task(self._save_position_loop())]
            if self.resends_dead_letters:
                background.append(asyncio.create_task(self._resend_dead_letters_loop()))
            try:
                await self._read_loop()
            finally:
                for task in (*background, *self._tasks):
                    task.cancel()
                await asyncio.gather(*background, *self._tasks, return_exceptions=True)
                with contextlib.suppress(LeaseLost):
                    await asyncio.shield(self._save_position())

    # -- the input: overridden by replays, which read a range of history instead -----------
    @property
    def consumer(self) -> str:
        return consumer_name(self.config, self.partition, self.partitions)

    async def _start_position(self) -> int:
        """This consumer's position; a new partition starts where the destination's single
        consumer stood (or at the end of the log)."""
        for consumer in (self.consumer, self.config.consumer):
            position = await asyncio.to_thread(self.store.get_position, consumer)
            if position is not None:
                return position
        return await asyncio.to_thread(self.store.head)

    async def _next_page(self) -> list[StoredEvent] | None:
        """The next events after `read_upto`; an empty list means none yet, None means no more ever."""
        page = await self._read_page()
        if page:
            return page
        # Up to the head there may be other sources' events only: skip them. The head is read
        # *before* looking again, never after an empty read: an event of ours committed in
        # between would lie below a head read afterwards, and be skipped, never delivered.
        head = await asyncio.to_thread(self.store.head)
        if self.read_upto < head:
            page = await self._read_page()
            if not page:
                self.read_upto = head
        return page

    async def _read_page(self) -> list[StoredEvent]:
        return await asyncio.to_thread(self.store.read_log, self.read_upto, PAGE_SIZE, self.config.source_id)

    def _prepare(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event as this worker routes it (a replay narrows its integrations)."""
        return event

    def _origin_ms(self, stored: StoredEvent) -> int:
        """Where an event's retry budget starts: its receipt, for live delivery."""
        return stored.received_ms

    def _persist_position(self, position: int) -> None:
        if self.lease is None:
            self.store.set_position(self.consumer, position)
            return
        lease = self.lease
        if not self.store.set_position_fenced(
            self.consumer, position, lease.name, lease.owner, lease.generation
        ):
            raise LeaseLost(f"lease {lease.name} moved on from generation {lease.generation}")

    # -- reading and batching -------------------------------------------------------------
    async def _read_loop(self) -> None:
        while True:
            while len(self.pending) >= MAX_PENDING_EVENTS:
                self._room.clear()
                await self._room.wait()
            self.wake.clear()
            page = await self._next_page()
            if page is None:
                await self._drain()
                return
            if page:
                self._take(page)
            await self._flush(force=False)
            if len(page) < PAGE_SIZE:
                await self._idle()

    async def _drain(self) -> None:
        """Send what is buffered and wait for every request to settle."""
        await self._flush(force=True)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _idle(self) -> None:
        """Wait for new events, or for the oldest buffered payload to reach max_wait."""
        timeout = 0.5
        if self._buffer:
            timeout = max(0.0, self._buffer_since + self.policy.max_wait - time.monotonic())
        try:
            await asyncio.wait_for(self.wake.wait(), timeout)
        except TimeoutError:
            await self._flush(force=True)

    def _take(self, page: Sequence[StoredEvent]) -> None:
        for stored in page:
            self.read_upto = stored.seq
            event = self._prepare(orjson.loads(stored.body))
            if self.partitions > 1 and partition_of(event, self.partitions) != self.partition:
                continue
            tag = Tag(stored.seq, event.get("messageId", ""), self._origin_ms(stored))
            payloads = self._payloads(event)
            if not payloads:
                continue
            self.pending[stored.seq] = _Pending(len(payloads))
            if not self._buffer:
                self._buffer_since = time.monotonic()
            self._buffer.extend(Item(tag, payload.endpoint, payload.body) for payload in payloads)

    def _payloads(self, event: dict[str, Any]) -> list[Payload]:
        reason = route(
            event,
            self.destination.name,
            opt_in=self.destination.opt_in,
            filters=self.filters,
            aliases=self.destination.aliases,
        )
        if reason is None:
            try:
                return self.destination.translate(event, self.settings)  # type: ignore[arg-type]
            except Skip as skip:
                reason = str(skip)
            except Exception as exc:  # a translation bug must not stop the destination
                log.exception("%s: translation failed for %s", self.label, event.get("messageId"))
                reason = f"translation error: {exc}"
        self.recorder.count(self.config.id, "filtered")
        self._counters["filtered"].inc()
        return []

    async def _flush(self, *, force: bool) -> None:
        if not self._buffer:
            return
        runs = cut_batches([(item, Payload(item.endpoint, item.body)) for item in self._buffer], self.policy)
        keep: list[Item] = []
        waited = time.monotonic() - self._buffer_since >= self.policy.max_wait
        for _endpoint, run in runs:
            items = [item for item, _ in run]
            if force or waited or len(items) >= self.policy.max_events:
                await self._dispatch(items)
            else:
                keep.extend(items)
        self._buffer = keep
        self._buffer_since = time.monotonic() if keep else 0.0

    async def _dispatch(self, items: list[Item]) -> None:
        await self.slots.acquire()
        self.in_flight += 1
        task = asyncio.create_task(self._deliver(items))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.in_flight -= 1
        self.slots.release()
        error = None if task.cancelled() else task.exception()
        if isinstance(error, LeaseLost):
            log.warning("%s: %s; stopping", self.label, error)
            self._stop()
        elif error is not None:
            log.error("%s: delivery task failed", self.label, exc_info=error)

    def _stop(self) -> None:
        """Stop the whole worker (its unit now belongs to another process)."""
        if self._main is not None and not self._main.done():
            self._main.cancel()

    # -- sending --------------------------------------------------------------------------
    async def _deliver(self, items: list[Item]) -> None:
        attempt = 0
        while items:
            request = self.destination.request(
                items[0].endpoint, [item.body for item in items], self.settings
            )  # type: ignore[arg-type]
            outcomes, response = await self._send(request, items)
            retry: list[Item] = []
            retry_after: float | None = None
            for item, outcome in zip(items, outcomes, strict=True):
                if outcome.verdict is Verdict.DELIVERED:
                    self._settle(item, "delivered")
                elif outcome.verdict is Verdict.GIVE_UP or self._too_old(item):
                    reason = (
                        outcome.reason
                        if outcome.verdict is Verdict.GIVE_UP
                        else f"gave up after {self.options.max_age_s:.0f} s: {outcome.reason}"
                    )
                    await self._bury(item, reason, request, response)
                    self._settle(item, "failed")
                else:
                    retry.append(item)
                    retry_after = max(retry_after or 0.0, outcome.retry_after or 0.0) or None
            if not retry:
                return
            self.recorder.count(self.config.id, "retried", len(retry))
            self._counters["retried"].inc(len(retry))
            items = retry
            self.retrying += len(items)
            try:
                await asyncio.sleep(self._backoff(attempt, retry_after))
            finally:
                self.retrying -= len(items)
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_S)
        ceiling = min(self.options.backoff_cap_s, self.options.backoff_base_s * 2**attempt)
        return random.uniform(0, ceiling)

    def _too_old(self, item: Item) -> bool:
        return time.time() * 1000 - item.tag.origin_ms > self.options.max_age_s * 1000

    async def _send(self, request: Request, items: list[Item]) -> tuple[list[Outcome], Response | None]:
        await self.bucket.acquire()
        if self.lease is not None:
            self.lease.check()  # a worker that was paused past its lease sends nothing more
        started = time.perf_counter()
        response: Response | None = None
        try:
            response = await self.http.send(request)
            classified = self.destination.classify(response, request, len(items))
            outcomes = classified if isinstance(classified, list) else [classified] * len(items)
            if len(outcomes) != len(items):
                outcomes = [
                    Outcome.retry(
                        f"{self.destination.name} classified {len(outcomes)} of {len(items)} payloads"
                    )
                ] * len(items)
        except httpx.TimeoutException as exc:
            outcomes = [
                Outcome.retry(f"timeout after {self.settings.timeout} s: {type(exc).__name__}")
            ] * len(items)
        except httpx.TransportError as exc:
            outcomes = [Outcome.retry(f"connection error: {type(exc).__name__}: {exc}")] * len(items)
        latency = time.perf_counter() - started
        self._request_latency.observe(latency)
        self._record_attempt(request, response, outcomes, items, latency)
        return outcomes, response

    def _record_attempt(
        self,
        request: Request,
        response: Response | None,
        outcomes: list[Outcome],
        items: list[Item],
        latency: float,
    ) -> None:
        verdicts = {o.verdict for o in outcomes}
        verdict = (
            Verdict.DELIVERED
            if verdicts == {Verdict.DELIVERED}
            else (Verdict.GIVE_UP if Verdict.GIVE_UP in verdicts else Verdict.RETRY)
        )
        failed = verdict is not Verdict.DELIVERED
        reason = next((o.reason for o in outcomes if o.verdict is not Verdict.DELIVERED), outcomes[0].reason)
        self.recorder.attempt(
            Attempt(
                destination_id=self.config.id,
                at_ms=int(time.time() * 1000),
                status=response.status if response else 0,
                verdict=str(verdict),
                latency_ms=round(latency * 1000, 2),
                events=len(items),
                message_ids=[item.tag.message_id for item in items[:20]],
                reason=self._redact(reason)[:500],
                request=self._request_excerpt(request) if failed else "",
                response=self._redact(response.text[:EXCERPT_BYTES]) if response else "",
            )
        )

    def _settle(self, item: Item, outcome: str) -> None:
        self.recorder.count(self.config.id, outcome)
        self._counters[outcome].inc()
        if outcome == "delivered":
            self._end_to_end.observe(max(0.0, time.time() - item.tag.origin_ms / 1000))
        if item.tag.dead_letter_id:
            self.recorder.dead_letter_settled(item.tag.dead_letter_id, outcome == "delivered")
            return
        pending = self.pending.get(item.tag.seq)
        if pending is None:
            return
        pending.payloads -= 1
        if pending.payloads <= 0:
            del self.pending[item.tag.seq]
            if len(self.pending) < MAX_PENDING_EVENTS:
                self._room.set()

    async def _bury(self, item: Item, reason: str, request: Request, response: Response | None) -> None:
        letter = DeadLetter(
            destination_id=self.config.id,
            seq=item.tag.seq,
            message_id=item.tag.message_id,
            endpoint=item.endpoint,
            body=item.body,
            reason=self._redact(reason)[:1000],
            status=response.status if response else 0,
            request=self._request_excerpt(request),
            response=self._redact(response.text[:EXCERPT_BYTES]) if response else "",
            failed_ms=int(time.time() * 1000),
            id=item.tag.dead_letter_id,
        )
        if item.tag.dead_letter_id:
            self.recorder.dead_letter_failed(letter)
        else:
            await self._keep_dead_letter(letter)

    async def _keep_dead_letter(self, letter: DeadLetter) -> None:
        """Written before the position may pass the event, so a crash cannot lose it. While
        the store is unreachable the event stays pending and the write is tried again."""
        delay = DEAD_LETTER_RETRY_S
        while True:
            try:
                await asyncio.to_thread(self.store.add_dead_letters, [letter])
                return
            except StoreUnavailable as exc:
                if self.lease is not None:
                    self.lease.check()
                log.warning("%s: dead letter not written yet (%s); again in %.1f s", self.label, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, DEAD_LETTER_RETRY_CAP_S)

    def _request_excerpt(self, request: Request) -> str:
        headers = "\n".join(
            f"{name}: {'[redacted]' if name.lower() in ('authorization', 'x-api-key', 'api-key') else value}"
            for name, value in request.headers
        )
        body = request.body[:EXCERPT_BYTES].decode("utf-8", "replace")
        return self._redact(f"{request.method} {request.url}\n{headers}\n\n{body}")

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text

    # -- position and dead letters ----------------------------------------------------------
    def position(self) -> int:
        """Every event up to here is settled; buffered events are pending too."""
        return min(self.pending) - 1 if self.pending else self.read_upto

    async def _save_position(self) -> None:
        """Read the position on the event loop (where `pending` and `read_upto` change
        together), write it on a thread."""
        position = self.position()
        if position != self.saved_position:
            await asyncio.to_thread(self._persist_position, position)
            self.saved_position = position

    async def _save_position_loop(self) -> None:
        while True:
            await asyncio.sleep(POSITION_SAVE_S)
            try:
                await self._save_position()
                head = await asyncio.to_thread(self.store.head)
                CONSUMER_LAG.labels(self.label).set(max(0, head - self.saved_position))
                self.recorder.state(self.config.id, self.retrying, self.in_flight)
            except LeaseLost as lost:
                log.warning("%s: %s; stopping", self.label, lost)
                self._stop()
                return
            except Exception:
                log.exception("%s: could not save the position; retrying", self.label)

    async def _resend_dead_letters_loop(self) -> None:
        """Send dead letters that `trackyard destination retry` queued again."""
        while True:
            await asyncio.sleep(1.0)
            try:
                letters = await asyncio.to_thread(self.store.take_queued_dead_letters, self.config.id, 1000)
            except Exception:
                log.exception("%s: could not read queued dead letters", self.label)
                continue
            if not letters:
                continue
            now = int(time.time() * 1000)
            items = [Item(Tag(d.seq, d.message_id, now, d.id), d.endpoint, d.body) for d in letters]
            for _endpoint, run in cut_batches(
                [(item, Payload(item.endpoint, item.body)) for item in items], self.policy
            ):
                await self._dispatch([item for item, _ in run])
