"""Archive and replay actions for the CLI and the JSON API: create, list, cancel and dry-run
replays; verify the archive. Functions take a store (and the archive storage) and plain
values and return plain data; a request that cannot be carried out raises ReplayError
with a message that names the thing, the value and the fix.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from trackyard.archive.history import History, Range, file_lines, received_ms
from trackyard.archive.replay import DEFAULT_LEASE_S, ReplayWorker, event_name, replay_range
from trackyard.archive.storage import ArchiveStorage
from trackyard.delivery.batching import plan_requests
from trackyard.delivery.recorder import Recorder
from trackyard.delivery.worker import WorkerOptions
from trackyard.destinations import registry
from trackyard.destinations.base import Payload, parse_settings
from trackyard.spec import CALL_TYPES, format_ms, now_ms, parse_ms
from trackyard.store import Store
from trackyard.store.archive import ARCHIVE_CONSUMER, ArchiveFile, ReplayCounts, ReplayJob
from trackyard.store.delivery import DestinationConfig

DRY_RUN_REQUESTS = 3


class ReplayError(ValueError):
    """A replay that cannot be created or changed as asked."""


@dataclass(frozen=True)
class ReplayRequest:
    """What a user asks for: times are ISO-8601 strings, names are names."""

    destination: str
    since: str | None = None
    until: str | None = None
    source: str | None = None
    events: Sequence[str] = ()
    types: Sequence[str] = ()
    rate: float = 0.0


@dataclass(frozen=True)
class _Resolved:
    config: DestinationConfig
    source_id: int
    since_ms: int | None
    until_ms: int | None
    last_seq: int


def _time(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    parsed = parse_ms(value)
    if parsed is None:
        raise ReplayError(
            f"{flag} {value!r} is not an ISO-8601 time; use e.g. 2026-11-01 or 2026-11-01T09:30:00Z"
        )
    return parsed


def _resolve(store: Store, request: ReplayRequest) -> _Resolved:
    config = store.get_destination(request.destination)
    source_id = config.source_id if request.source is None else store.get_source(request.source).id
    since_ms, until_ms = _time(request.since, "--since"), _time(request.until, "--until")
    if since_ms is not None and until_ms is not None and since_ms > until_ms:
        raise ReplayError(f"--since {request.since} is after --until {request.until}")
    unknown = sorted(set(request.types) - CALL_TYPES)
    if unknown:
        raise ReplayError(f"unknown --type {', '.join(unknown)}; use {', '.join(sorted(CALL_TYPES))}")
    if request.rate < 0:
        raise ReplayError(f"--rate must be 0 (no limit) or a number of events per second; got {request.rate}")
    return _Resolved(config, source_id, since_ms, until_ms, _end_of_range(store, config, source_id))


def _end_of_range(store: Store, config: DestinationConfig, source_id: int) -> int:
    """Where the destination's live delivery takes over: a replay stops there, so no event
    is both replayed and delivered live (events of another source: the end of the log)."""
    if source_id == config.source_id:
        position = store.get_position(config.consumer)
        if position is not None:
            return position
    return store.head()


def create_replay(
    store: Store, request: ReplayRequest, *, owner: str = "", lease_s: float = DEFAULT_LEASE_S
) -> ReplayJob:
    """A replay job; leased to `owner` (who runs it at once) when given, else left for a server."""
    resolved = _resolve(store, request)
    job = store.create_replay_job(
        resolved.config.id,
        resolved.source_id,
        since_ms=resolved.since_ms,
        until_ms=resolved.until_ms,
        events=list(request.events),
        types=list(request.types),
        rate=request.rate,
        last_seq=resolved.last_seq,
        now=now_ms(),
        owner=owner,
        lease_ms=int(lease_s * 1000),
    )
    total = History(store, None, replay_range(job)).estimate()
    store.set_replay_total(job.id, total)
    return store.get_replay_job(job.id)


def replay_view(store: Store, job: ReplayJob) -> dict[str, Any]:
    names = {config.id: config.name for config in store.list_destinations()}
    sources = {source.id: source.name for source in store.list_sources()}
    return {
        "id": job.id,
        "destination": names.get(job.destination_id),
        "source": sources.get(job.source_id),
        "state": job.state,
        "since": None if job.since_ms is None else format_ms(job.since_ms),
        "until": None if job.until_ms is None else format_ms(job.until_ms),
        "events": list(job.events),
        "types": list(job.types),
        "rate": job.rate,
        "total": job.total,
        **job.counts.to_json(),
        "error": job.error,
        "created": format_ms(job.created_ms),
        "finished": None if job.finished_ms is None else format_ms(job.finished_ms),
    }


def list_replays(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    return [replay_view(store, job) for job in store.list_replay_jobs(limit)]


def cancel_replay(store: Store, job_id: int) -> dict[str, Any]:
    job = store.get_replay_job(job_id)
    if not job.active:
        raise ReplayError(f"replay {job_id} has already ended ({job.state})")
    return replay_view(store, store.cancel_replay_job(job_id, now_ms()))


# -- dry run ---------------------------------------------------------------------------------
def dry_run(store: Store, storage: ArchiveStorage | None, request: ReplayRequest) -> dict[str, Any]:
    """Read the range and translate it as the replay would, sending nothing: counts per
    event name and the first requests, secrets redacted."""
    resolved = _resolve(store, request)
    log_from = min(store.get_position(ARCHIVE_CONSUMER) or 0, resolved.last_seq)
    scope = Range(resolved.source_id, log_from, resolved.last_seq, resolved.since_ms, resolved.until_ms)
    destination = registry.get(resolved.config.type)
    settings = parse_settings(destination.Settings, resolved.config.settings, resolved.config.name)
    job = ReplayJob(
        id=0,
        destination_id=resolved.config.id,
        source_id=resolved.source_id,
        since_ms=resolved.since_ms,
        until_ms=resolved.until_ms,
        events=tuple(request.events),
        types=tuple(request.types),
        rate=0.0,
        log_from=log_from,
        last_seq=resolved.last_seq,
        cursor=0,
        state="dry-run",
        counts=ReplayCounts(),
        total=0,
        error="",
        created_ms=now_ms(),
        updated_ms=now_ms(),
    )
    history = History(store, storage, scope)
    worker = ReplayWorker(
        store,
        resolved.config,
        destination,
        settings,
        Recorder(store),
        WorkerOptions(),
        job=job,
        history=history,
        owner="",
    )
    names: Counter[str] = Counter()
    samples: list[Payload] = []
    keep = DRY_RUN_REQUESTS * destination.batching_policy(settings).max_events
    read = 0
    for stored in history.events(0):
        read += 1
        event, payloads = worker.translate(orjson.loads(stored.body))
        if payloads:
            names[event_name(event)] += 1
            samples.extend(payloads[: max(0, keep - len(samples))])
    planned = plan_requests(destination, settings, [(index, p) for index, p in enumerate(samples)])
    sent = sum(names.values())
    return {
        "destination": resolved.config.name,
        "read": read,
        "sent": sent,
        "filtered": read - sent,
        "events": dict(names.most_common()),
        "requests": [worker.describe(p.request) for p in planned[:DRY_RUN_REQUESTS]],
    }


# -- verify ----------------------------------------------------------------------------------
def _digest(storage: ArchiveStorage, key: str) -> tuple[str, int]:
    sha256, size = hashlib.sha256(), 0
    with storage.open(key) as raw:
        while chunk := raw.read(1 << 20):
            sha256.update(chunk)
            size += len(chunk)
    return sha256.hexdigest(), size


def verify_file(storage: ArchiveStorage, listed: ArchiveFile) -> list[str]:
    """What is wrong with one listed file (nothing: an empty list)."""
    try:
        digest, size = _digest(storage, listed.key)
    except FileNotFoundError:
        return [f"{listed.key}: listed but missing"]
    problems = []
    if (digest, size) != (listed.sha256, listed.size):
        problems.append(f"{listed.key}: checksum or size differs from the manifest")
    try:
        count, lowest, highest = 0, None, None
        for line in file_lines(storage, listed.key):
            count += 1
            received = received_ms(line)
            lowest = received if lowest is None else min(lowest, received)
            highest = received if highest is None else max(highest, received)
    except Exception as exc:
        return [*problems, f"{listed.key}: unreadable ({type(exc).__name__}: {exc})"]
    if count != listed.count:
        problems.append(f"{listed.key}: {count} events, the manifest says {listed.count}")
    if (lowest, highest) != (listed.min_received_ms, listed.max_received_ms):
        problems.append(f"{listed.key}: receivedAt range differs from the manifest")
    return problems


def verify_archive(store: Store, storage: ArchiveStorage) -> dict[str, Any]:
    """Check every listed file against the manifest, look for files nobody listed, and
    for events in neither the archive nor the log. Unlisted files (published by a writer
    stopped before its checkpoint committed; removed when the writer starts again) are
    reported but are no fault: nothing reads a file the manifest does not list. Files
    removed by archive retention are in neither the manifest nor the storage, and their
    events lie below the archive position, so they are no gap either."""
    problems: list[str] = []
    files = events = size = 0
    keys: list[str] = []
    last_by_source: dict[int, int] = {}
    position = store.get_position(ARCHIVE_CONSUMER) or 0
    after = 0
    while batch := store.list_archive_files(after):
        for listed in batch:
            files, events, size = files + 1, events + listed.count, size + listed.size
            keys.append(listed.key)
            problems.extend(verify_file(storage, listed))
            if listed.first_seq <= last_by_source.get(listed.source_id, 0):
                problems.append(f"{listed.key}: overlaps the previous file of its source")
            if listed.last_seq > position:
                problems.append(f"{listed.key}: ends past the archive position {position}")
            last_by_source[listed.source_id] = listed.last_seq
        after = batch[-1].id
    listed_keys = set(keys)
    unlisted = [key for key in storage.published() if key not in listed_keys]
    segments = store.segments()
    oldest_in_log = segments[0].first_seq if segments else 1
    gaps = []
    if oldest_in_log > position + 1:
        gaps.append(f"seq {position + 1}-{oldest_in_log - 1} are in neither the archive nor the log")
    return {
        "location": storage.describe(),
        "files": files,
        "events": events,
        "bytes": size,
        "archive_position": position,
        "log_from": oldest_in_log,
        "head": store.head(),
        "problems": problems,
        "unlisted": unlisted,
        "gaps": gaps,
        "ok": not problems and not gaps,
    }
