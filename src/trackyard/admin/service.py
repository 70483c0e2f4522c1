"""The service layer: every administrative action, once, for the CLI, the JSON API and the UI.

Functions take a store and plain values and return plain data; user mistakes raise
ServiceError with a message that names the thing, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from trackyard.admin import storage
from trackyard.archive import service as archive
from trackyard.archive.storage import ArchiveStorage
from trackyard.destinations import registry
from trackyard.destinations.base import (
    Destination,
    DestinationSettings,
    Request,
    Response,
    SettingsError,
    Skip,
    parse_settings,
    redacted,
    secret_values,
    settings_schema,
    settings_to_json,
)
from trackyard.pipeline import EventFilter
from trackyard.spec import Envelope, format_ms, normalise, now_ms
from trackyard.store import Source, SourceNotFound, Store, StoredEvent, StoredFailure, StoreError
from trackyard.store.base import check_source_name
from trackyard.store.delivery import Attempt, DeadLetter, DestinationConfig
from trackyard.warehouse import service as warehouse
from trackyard.warehouse.registry import WarehouseConfig

ADMIN_TOKEN_SETTING = "admin_token"
SESSION_KEY_SETTING = "admin_session_key"
EXCERPT_CHARS = 2048
_SETTING_IN_MESSAGE = re.compile(r"setting '([A-Za-z0-9_]+)'")
_WRITE_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_DESTINATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,62}")
_KEY_ALPHABET = string.ascii_letters + string.digits


def new_write_key() -> str:
    """32 letters and digits, the shape of a Segment write key."""
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(32))


def new_admin_token() -> str:
    return "tya_" + secrets.token_urlsafe(32)


@dataclass
class FirstStart:
    """What a brand-new installation created, to be printed once."""

    source: Source | None = None
    admin_token: str | None = None

    @property
    def happened(self) -> bool:
        return self.source is not None or self.admin_token is not None


def bootstrap(store: Store) -> FirstStart:
    """Create the `default` source and the admin token if this store has none."""
    created = FirstStart()
    if not store.list_sources():
        created.source = store.create_source("default", new_write_key())
    if store.get_setting(ADMIN_TOKEN_SETTING) is None:
        created.admin_token = new_admin_token()
        store.set_setting(ADMIN_TOKEN_SETTING, created.admin_token)
    return created


class ServiceError(ValueError):
    """A request that cannot be carried out as asked; the message says why and what to do.

    `field` names the input at fault when there is one (a setting, a name), so a form can
    point at it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# -- sources -----------------------------------------------------------------------------
def create_source(store: Store, name: str, write_key: str | None = None) -> Source:
    try:
        check_source_name(name)
    except ValueError as exc:
        raise ServiceError(str(exc), field="name") from None
    if write_key is not None and not _WRITE_KEY.fullmatch(write_key):
        raise ServiceError(
            "a write key is 1–128 letters, digits, '.', '_' or '-' (leave it out to get a generated one)",
            field="write_key",
        )
    return store.create_source(name, write_key or new_write_key())


def source_view(source: Source) -> dict[str, Any]:
    return {
        "name": source.name,
        "slug": source.slug,
        "write_key": source.write_key,
        "created_at": format_ms(source.created_ms),
    }


def list_sources(store: Store) -> list[dict[str, Any]]:
    """The sources in use (deleted ones are kept disabled in the store, and hidden here)."""
    return [source_view(source) for source in store.list_sources() if source.enabled]


def get_source(store: Store, name: str) -> Source:
    source = store.get_source(name)
    if not source.enabled:
        raise SourceNotFound(f"source {name!r} does not exist (see `trackyard source list`)")
    return source


def rotate_write_key(store: Store, name: str) -> Source:
    """Give a source a new write key; the old one stops working at once."""
    source = get_source(store, name)
    storage.replace_write_key(store, source.id, new_write_key())
    return get_source(store, name)


def delete_source(store: Store, name: str) -> None:
    """Revoke a source's write key and hide it; its events stay in the log."""
    source = get_source(store, name)
    attached = [config.name for config in store.list_destinations() if config.source_id == source.id]
    if attached:
        raise ServiceError(
            f"source {name!r} still sends events to {', '.join(map(repr, attached))}: delete those first"
        )
    storage.retire_source(store, source.id, source.name, source.slug)


# -- events ------------------------------------------------------------------------------
def event_view(stored: StoredEvent) -> dict[str, Any]:
    event = stored.event()
    return {
        "seq": stored.seq,
        "received_at": format_ms(stored.received_ms),
        "type": event.get("type", ""),
        "name": event.get("event") or event.get("name") or event.get("groupId") or "",
        "user": event.get("userId") or event.get("anonymousId") or "",
        "event": event,
    }


def failure_view(failure: StoredFailure) -> dict[str, Any]:
    try:
        body = orjson.loads(failure.body)
    except orjson.JSONDecodeError:
        body = failure.body.decode("utf-8", "replace")
    return {
        "id": failure.id,
        "received_at": format_ms(failure.received_ms),
        "code": failure.code,
        "reason": failure.reason,
        "event": body,
    }


def recent_events(store: Store, source_name: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest events of a source, oldest first."""
    source = get_source(store, source_name)
    return [event_view(stored) for stored in storage.newest_events(store, source.id, limit)]


def failed_events(store: Store, source_name: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest events of a source that failed validation on ingest, with the reason."""
    source = get_source(store, source_name)
    return [failure_view(failure) for failure in storage.newest_failures(store, source.id, limit)]


def events_after(
    store: Store, source_id: int, after_seq: int, after_failure: tuple[int, int], limit: int = 200
) -> tuple[list[StoredEvent], list[StoredFailure]]:
    """What arrived for a source since a live view's last position: events after a seq,
    failures after (received_ms, id)."""
    events = store.read_log(after_seq, limit, source_id)
    since_ms, last_id = after_failure
    failures = [f for f in store.read_failures(source_id, since_ms, limit) if f.id > last_id]
    return events, failures


# -- destinations ------------------------------------------------------------------------
def catalog() -> list[dict[str, Any]]:
    return [destination.catalog_entry() for destination in registry.catalog().values()]


def _validated_settings(type_: str, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    try:
        destination = registry.get(type_)
    except KeyError as exc:
        raise ServiceError(exc.args[0], field="type") from None
    settings = _parsed(destination, raw, f"destination {name!r}")
    return {key: value for key, value in settings_to_json(settings).items() if value is not None}


def _parsed(destination: Destination[Any], raw: dict[str, Any], where: str) -> DestinationSettings:
    try:
        return parse_settings(destination.Settings, raw, where)
    except SettingsError as exc:
        found = _SETTING_IN_MESSAGE.search(str(exc))
        raise ServiceError(str(exc), field=found.group(1) if found else None) from None


def _validated_filters(filters: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return EventFilter.from_json(filters or {}).to_json()
    except ValueError as exc:
        raise ServiceError(str(exc)) from None


def add_destination(
    store: Store,
    source_name: str,
    type_: str,
    name: str,
    raw_settings: dict[str, Any],
    filters: dict[str, Any] | None = None,
    enabled: bool = True,
) -> DestinationConfig:
    """Validate the settings against the type's schema and add a destination that receives
    the events arriving from now on (or, added switched off, from when it is switched on)."""
    if not _DESTINATION_NAME.fullmatch(name):
        raise ServiceError(
            f"destination name {name!r} is invalid: use 1–63 letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    settings = _validated_settings(type_, name, raw_settings)
    source = get_source(store, source_name)
    config = store.create_destination(source.id, type_, name, settings, _validated_filters(filters))
    return config if enabled else store.update_destination(name, enabled=False)


def update_destination(
    store: Store,
    name: str,
    *,
    raw_settings: dict[str, Any] | None = None,
    filters: dict[str, Any] | None = None,
    enabled: bool | None = None,
) -> DestinationConfig:
    """Change settings, filters or the on/off switch. A secret left empty keeps its value,
    because secrets are never shown and so cannot be sent back."""
    config = store.get_destination(name)
    settings = None
    if raw_settings is not None:
        settings = _validated_settings(config.type, name, _with_kept_secrets(config, raw_settings))
    checked_filters = None if filters is None else _validated_filters(filters)
    return store.update_destination(name, enabled=enabled, settings=settings, filters=checked_filters)


def destination_view(store: Store, config: DestinationConfig) -> dict[str, Any]:
    """A destination as it may be shown: secrets only say whether they are set."""
    destination = registry.catalog().get(config.type)
    settings: dict[str, Any] = {}
    if destination is not None:
        settings = redacted(parse_settings(destination.Settings, config.settings, config.name))
    source_names = {source.id: source.name for source in store.list_sources()}
    return {
        "name": config.name,
        "type": config.type,
        "display_name": destination.name if destination else config.type,
        "category": str(destination.category) if destination else "",
        "source": source_names.get(config.source_id),
        "enabled": config.enabled,
        "settings": settings,
        "filters": config.filters,
    }


def _with_kept_secrets(config: DestinationConfig, raw_settings: dict[str, Any]) -> dict[str, Any]:
    """The stored value of every secret the input leaves empty."""
    merged = dict(raw_settings)
    for spec in settings_schema(registry.get(config.type).Settings):
        if spec.secret and not merged.get(spec.name) and config.settings.get(spec.name):
            merged[spec.name] = config.settings[spec.name]
    return merged


def list_destinations(store: Store) -> list[dict[str, Any]]:
    return [destination_view(store, config) for config in store.list_destinations()]


def get_destination(store: Store, name: str) -> dict[str, Any]:
    return destination_view(store, store.get_destination(name))


def delete_destination(store: Store, name: str) -> None:
    """A destination, its delivery records, and its replays still running (cancelled)."""
    config = store.get_destination(name)
    for job in store.list_replay_jobs(1000):
        if job.destination_id == config.id and job.active:
            store.cancel_replay_job(job.id, now_ms())
    storage.remove_destination(store, config)


def destination_status(store: Store, name: str) -> dict[str, Any]:
    config = store.get_destination(name)
    totals = store.delivery_totals(config.id)
    state = store.worker_state(config.id)
    fresh = state is not None and now_ms() - state.updated_ms < 10_000
    position = store.get_position(config.consumer) or 0
    errors = store.recent_attempts(config.id, limit=5, failed_only=True)
    return {
        "delivered": totals.delivered,
        "retrying": state.retrying if fresh and state else 0,
        "failed": totals.failed,
        "filtered": totals.filtered,
        "lag": max(0, store.head() - position) if config.enabled else 0,
        "dead_letters": store.count_dead_letters(config.id),
        "last_errors": [
            {"at": format_ms(a.at_ms), "status": a.status, "reason": a.reason, "response": a.response[:500]}
            for a in errors
        ],
    }


def retry_dead_letters(store: Store, name: str) -> int:
    return store.requeue_dead_letters(store.get_destination(name).id)


RECENT_FAILURE_MINUTES = 60


def health(store: Store, config: DestinationConfig, status: dict[str, Any]) -> str:
    """One word for a destination's state, which the UI colours: off, failing (dead letters
    waiting, or failures in the last hour), retrying, or healthy."""
    if not config.enabled:
        return "off"
    since = now_ms() // 60_000 - RECENT_FAILURE_MINUTES
    recent_failures = sum(counts.failed for _, counts in store.delivery_series(config.id, since))
    if status["dead_letters"] or recent_failures:
        return "failing"
    if status["retrying"]:
        return "retrying"
    return "healthy"


def destination_health(store: Store) -> list[dict[str, Any]]:
    """Every destination with its counts and health, for the overview."""
    rows = []
    for config in store.list_destinations():
        status = destination_status(store, config.name)
        rows.append(
            {**destination_view(store, config), "status": status, "health": health(store, config, status)}
        )
    return rows


# -- delivery records (secrets scrubbed once more on the way out) --------------------------
def _secrets_of(config: DestinationConfig) -> list[str]:
    destination = registry.catalog().get(config.type)
    if destination is None:
        return []
    try:
        settings = parse_settings(destination.Settings, config.settings, config.name)
    except SettingsError:
        return []
    return [value for value in secret_values(settings) if len(value) >= 4]


def _scrub(text: str, hidden: list[str]) -> str:
    for value in hidden:
        text = text.replace(value, "[redacted]")
    return text


def attempt_view(attempt: Attempt, hidden: list[str]) -> dict[str, Any]:
    return {
        "at": format_ms(attempt.at_ms),
        "status": attempt.status,
        "verdict": attempt.verdict,
        "latency_ms": attempt.latency_ms,
        "events": attempt.events,
        "message_ids": attempt.message_ids,
        "reason": _scrub(attempt.reason, hidden),
        "request": _scrub(attempt.request, hidden),
        "response": _scrub(attempt.response, hidden),
    }


def destination_attempts(
    store: Store, name: str, limit: int = 50, failed_only: bool = False
) -> list[dict[str, Any]]:
    """The newest attempts first: status, latency, and for failures the request and response."""
    config = store.get_destination(name)
    hidden = _secrets_of(config)
    return [attempt_view(a, hidden) for a in store.recent_attempts(config.id, limit, failed_only)]


def dead_letter_view(letter: DeadLetter, hidden: list[str]) -> dict[str, Any]:
    return {
        "id": letter.id,
        "seq": letter.seq,
        "message_id": letter.message_id,
        "state": letter.state,
        "failed_at": format_ms(letter.failed_ms),
        "status": letter.status,
        "reason": _scrub(letter.reason, hidden),
        "request": _scrub(letter.request, hidden),
        "response": _scrub(letter.response, hidden),
        "body": _scrub(orjson.dumps(letter.body).decode(), hidden),
    }


def destination_dead_letters(store: Store, name: str, limit: int = 100) -> list[dict[str, Any]]:
    config = store.get_destination(name)
    hidden = _secrets_of(config)
    return [dead_letter_view(letter, hidden) for letter in store.dead_letters(config.id, None, limit)]


def delivery_per_minute(store: Store, name: str, since_ms: int) -> list[dict[str, Any]]:
    """Delivered, retried, failed and filtered counts per minute (minutes without any are left out)."""
    config = store.get_destination(name)
    return [
        {"minute": minute, **vars(counts)}
        for minute, counts in store.delivery_series(config.id, since_ms // 60_000)
    ]


# -- replays (the archive's service, secrets scrubbed from what it shows) ------------------
def preview_replay(store: Store, files: ArchiveStorage, request: archive.ReplayRequest) -> dict[str, Any]:
    """What a replay would send: counts per event name and the first requests, sending nothing."""
    summary = archive.dry_run(store, files, request)
    hidden = _secrets_of(store.get_destination(request.destination))
    summary["requests"] = [_scrub(text, hidden) for text in summary["requests"]]
    return summary


def with_progress(view: dict[str, Any]) -> dict[str, Any]:
    """A replay's view with `percent`: of the events to read, how many were (100 once done)."""
    done = view["state"] == "done"
    return {**view, "percent": 100 if done else min(99, view["read"] * 100 // max(1, view["total"]))}


def start_replay(store: Store, request: archive.ReplayRequest) -> dict[str, Any]:
    """A replay job, which the serving processes pick up and run."""
    return with_progress(archive.replay_view(store, archive.create_replay(store, request)))


def destination_replays(store: Store, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest replays into one destination."""
    config = store.get_destination(name)
    jobs = [job for job in store.list_replay_jobs(200) if job.destination_id == config.id]
    return [with_progress(archive.replay_view(store, job)) for job in jobs[:limit]]


def replay(store: Store, job_id: int) -> dict[str, Any]:
    return with_progress(archive.replay_view(store, store.get_replay_job(job_id)))


def cancel_replay(store: Store, job_id: int) -> dict[str, Any]:
    return with_progress(archive.cancel_replay(store, job_id))


# -- warehouses (the warehouse room's service) -------------------------------------------
class WarehouseNotFound(StoreError):
    pass


def warehouses(store: Store, builtin: WarehouseConfig | None) -> list[dict[str, Any]]:
    """Every warehouse with its last sync, lag behind the log and last error."""
    return warehouse.status(store, builtin)


def warehouse_status(store: Store, builtin: WarehouseConfig | None, name: str) -> dict[str, Any]:
    for row in warehouses(store, builtin):
        if row["name"] == name:
            return row
    raise WarehouseNotFound(f"no warehouse named {name!r} (see `trackyard warehouse list`)")


def sync_warehouse(store: Store, builtin: WarehouseConfig | None, name: str) -> dict[str, Any]:
    """Load everything pending into one warehouse now; the result says what was loaded, or the error."""
    warehouse_status(store, builtin, name)
    return dataclasses.asdict(warehouse.sync(store, builtin, name)[0])


def warehouse_tables(store: Store, builtin: WarehouseConfig | None, name: str) -> list[dict[str, Any]]:
    """The tables of one warehouse's source schemas with their row counts."""
    warehouse_status(store, builtin, name)
    return warehouse.warehouse_tables(store, builtin, name)


# -- a test event ------------------------------------------------------------------------
def sample_event() -> dict[str, Any]:
    """A Spec track call as the log holds one, with an id that marks it as a test."""
    received = now_ms()
    message = {
        "type": "track",
        "event": "Test Event Sent",
        "userId": "trackyard-test-user",
        "messageId": f"trackyard-test-{secrets.token_hex(8)}",
        "properties": {"source": "trackyard", "test": True},
        "context": {"library": {"name": "trackyard", "version": "test"}},
    }
    return normalise(message, Envelope(received_ms=received, channel="server"))


def send_test_event(
    store: Store, type_: str, raw_settings: dict[str, Any] | None, destination_name: str | None = None
) -> dict[str, Any]:
    """Translate a sample event with these settings and send it to the tool now.

    With `destination_name`, secrets left empty are that destination's (an edit form never
    holds them), and settings left out altogether are all of its stored settings. The answer
    shows the request and the response with every secret redacted.
    """
    try:
        destination = registry.get(type_)
    except KeyError as exc:
        raise ServiceError(exc.args[0], field="type") from None
    if destination_name:
        config = store.get_destination(destination_name)
        raw_settings = config.settings if raw_settings is None else _with_kept_secrets(config, raw_settings)
    settings = _parsed(destination, raw_settings or {}, f"destination {destination_name or type_!r}")
    hidden = [value for value in secret_values(settings) if len(value) >= 4]
    try:
        payload = destination.translate(sample_event(), settings)[0]
    except (Skip, IndexError) as exc:
        return {
            "verdict": "skipped",
            "status": 0,
            "reason": str(exc) or "nothing to send",
            "request": "",
            "response": "",
        }
    request = destination.request(payload.endpoint, [payload.body], settings)
    return _send_once(destination, request, settings.timeout, hidden)


def _send_once(
    destination: Destination[Any], request: Request, timeout: float, hidden: list[str]
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        reply = httpx.request(
            request.method, request.url, headers=list(request.headers), content=request.body, timeout=timeout
        )
    except httpx.HTTPError as exc:
        return _test_result("retry", 0, f"{type(exc).__name__}: {exc}", request, None, hidden, started)
    response = Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content)
    outcome = destination.classify(response, request, 1)
    first = outcome[0] if isinstance(outcome, list) else outcome
    return _test_result(
        str(first.verdict), reply.status_code, first.reason, request, response, hidden, started
    )


def _test_result(
    verdict: str,
    status: int,
    reason: str,
    request: Request,
    response: Response | None,
    hidden: list[str],
    started: float,
) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "status": status,
        "reason": _scrub(reason, hidden),
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "request": _scrub(request_excerpt(request), hidden),
        "response": _scrub(response.text[:EXCERPT_CHARS], hidden) if response else "",
    }


_SENSITIVE_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-signature"})


def request_excerpt(request: Request) -> str:
    headers = "\n".join(
        f"{name}: {'[redacted]' if name.lower() in _SENSITIVE_HEADERS else value}"
        for name, value in request.headers
    )
    body = request.body[:EXCERPT_CHARS].decode("utf-8", "replace")
    return f"{request.method} {request.url}\n{headers}\n\n{body}"


# -- admin -------------------------------------------------------------------------------
def admin_token(store: Store, rotate: bool = False) -> str:
    token = store.get_setting(ADMIN_TOKEN_SETTING)
    if token is None or rotate:
        token = new_admin_token()
        store.set_setting(ADMIN_TOKEN_SETTING, token)
    return token


def token_fingerprint(token: str) -> str:
    """What a session remembers of the token it was opened with: rotating the token ends it."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def session_key(store: Store) -> bytes:
    """The key that signs the web app's session cookies, made once and kept in the store, so
    every process serving the same store accepts the same sessions."""
    key = store.get_setting(SESSION_KEY_SETTING)
    if key is None:
        store.set_setting(SESSION_KEY_SETTING, secrets.token_urlsafe(32))
        key = store.get_setting(SESSION_KEY_SETTING) or ""
    return key.encode()
