"""Does this event go to this destination? (segment-contract.md §1.11)

Order of the checks: the destination's own event filter, then the event's `integrations`
object (`All` is the default for names it does not list; names are case-sensitive
catalog names; an object value counts as enabled; opt-in destinations such as
Salesforce need their name listed), then `_metadata.bundled` (already delivered in
device mode by the browser, so cloud mode skips it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trackyard.spec import CALL_TYPES


@dataclass(frozen=True)
class EventFilter:
    """Allow or block lists of call types and event names; empty allow lists allow everything."""

    allow_types: frozenset[str] = frozenset()
    block_types: frozenset[str] = frozenset()
    allow_events: frozenset[str] = frozenset()
    block_events: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventFilter:
        def names(key: str) -> frozenset[str]:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"filter {key!r} must be a list of strings")
            return frozenset(value)

        built = cls(names("allow_types"), names("block_types"), names("allow_events"), names("block_events"))
        unknown = (built.allow_types | built.block_types) - CALL_TYPES
        if unknown:
            raise ValueError(f"unknown event types in filter: {', '.join(sorted(unknown))}")
        return built

    def to_json(self) -> dict[str, list[str]]:
        return {
            key: sorted(getattr(self, key))
            for key in ("allow_types", "block_types", "allow_events", "block_events")
            if getattr(self, key)
        }

    def reason_to_drop(self, event: Mapping[str, Any]) -> str | None:
        call_type = event.get("type", "")
        if self.allow_types and call_type not in self.allow_types:
            return f"filter: type {call_type} is not allowed"
        if call_type in self.block_types:
            return f"filter: type {call_type} is blocked"
        name = event.get("event")
        if call_type == "track":
            if self.allow_events and name not in self.allow_events:
                return f"filter: event {name!r} is not allowed"
            if name in self.block_events:
                return f"filter: event {name!r} is blocked"
        return None


def route(
    event: Mapping[str, Any],
    destination_name: str,
    *,
    opt_in: bool = False,
    filters: EventFilter | None = None,
    aliases: tuple[str, ...] = (),
) -> str | None:
    """None when the event goes to the destination, else the reason it does not.

    `aliases` are other keys Segment users write for the same tool (e.g. "MailChimp" for
    "Mailchimp", "Segment" for "Segment Connections"); the catalog name is looked up first."""
    if filters is not None:
        reason = filters.reason_to_drop(event)
        if reason:
            return reason
    integrations = event.get("integrations")
    if not isinstance(integrations, Mapping):
        integrations = {}
    named = next((name for name in (destination_name, *aliases) if name in integrations), None)
    if named is not None:
        if integrations[named] is False:
            return f"integrations: {named} is false"
    elif opt_in:
        return f"integrations: {destination_name} is opt-in and not named"
    elif integrations.get("All", True) is False:
        return "integrations: All is false"
    if destination_name in _bundled(event) or any(alias in _bundled(event) for alias in aliases):
        return f"_metadata: {destination_name} was delivered in device mode"
    return None


def _bundled(event: Mapping[str, Any]) -> Iterable[str]:
    metadata = event.get("_metadata")
    bundled = metadata.get("bundled") if isinstance(metadata, Mapping) else None
    return bundled if isinstance(bundled, list) else ()
