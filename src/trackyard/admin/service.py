"""The service layer: every administrative action, once, for the CLI, the JSON API and the UI.

Functions take a store and plain values and return plain data; user mistakes raise
ServiceError with a message that names the thing, the value and the fix.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

from trackyard.destinations import registry
from trackyard.destinations.base import (
    SettingsError,
    parse_settings,
    redacted,
    settings_schema,
    settings_to_json,
)
from trackyard.pipeline import EventFilter
from trackyard.spec import format_ms, now_ms
from trackyard.store import Source, Store
from trackyard.store.delivery import DestinationConfig

ADMIN_TOKEN_SETTING = "admin_token"
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
    """A request that cannot be carried out as asked; the message says why and what to do."""


# -- sources -----------------------------------------------------------------------------
def create_source(store: Store, name: str, write_key: str | None = None) -> Source:
    return store.create_source(name, write_key or new_write_key())


# -- destinations ------------------------------------------------------------------------
def catalog() -> list[dict[str, Any]]:
    return [destination.catalog_entry() for destination in registry.catalog().values()]


def _validated_settings(type_: str, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    try:
        destination = registry.get(type_)
    except KeyError as exc:
        raise ServiceError(exc.args[0]) from None
    try:
        settings = parse_settings(destination.Settings, raw, f"destination {name!r}")
    except SettingsError as exc:
        raise ServiceError(str(exc)) from None
    return {key: value for key, value in settings_to_json(settings).items() if value is not None}


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
) -> DestinationConfig:
    """Validate the settings against the type's schema and add an enabled destination
    that receives the events arriving from now on."""
    if not name.strip():
        raise ServiceError("a destination needs a name")
    settings = _validated_settings(type_, name, raw_settings)
    source = store.get_source(source_name)
    return store.create_destination(source.id, type_, name, settings, _validated_filters(filters))


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
        merged = dict(raw_settings)
        for spec in settings_schema(registry.get(config.type).Settings):
            if spec.secret and not merged.get(spec.name) and config.settings.get(spec.name):
                merged[spec.name] = config.settings[spec.name]
        settings = _validated_settings(config.type, name, merged)
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


def list_destinations(store: Store) -> list[dict[str, Any]]:
    return [destination_view(store, config) for config in store.list_destinations()]


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


# -- admin -------------------------------------------------------------------------------
def admin_token(store: Store, rotate: bool = False) -> str:
    token = store.get_setting(ADMIN_TOKEN_SETTING)
    if token is None or rotate:
        token = new_admin_token()
        store.set_setting(ADMIN_TOKEN_SETTING, token)
    return token
