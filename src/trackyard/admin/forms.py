"""HTML forms ⇄ the service layer's plain values: settings forms generated from a destination
type's schema, event filters, and the fields a template renders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData

from trackyard.admin.service import ServiceError
from trackyard.spec import CALL_TYPES

SETTING_PREFIX = "s."  # settings fields are named "s.<setting>", apart from the form's own fields
EVENT_TYPES = tuple(sorted(CALL_TYPES))
_INPUT_TYPES = {
    "secret": "password",
    "integer": "number",
    "number": "number",
    "boolean": "checkbox",
    "choice": "select",
    "mapping": "textarea",
}


@dataclass(frozen=True)
class Field:
    """One settings field as a template renders it."""

    name: str  # the form field's name
    id: str
    label: str
    help: str
    input: str  # text, url, password, number, checkbox, select, textarea
    required: bool
    value: str
    checked: bool
    choices: tuple[str, ...]
    advanced: bool
    secret_set: bool
    step: str
    error: str


def _text(kind: str, value: Any) -> str:
    if value is None or kind in ("secret", "boolean"):
        return ""
    if kind == "mapping" and isinstance(value, Mapping):
        return "\n".join(f"{key}: {item}" for key, item in value.items())
    if kind == "list" and isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _checked(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "on", "1")


def settings_fields(
    specs: list[dict[str, Any]],
    values: Mapping[str, Any],
    errors: Mapping[str, str],
    *,
    editing: bool = False,
) -> list[Field]:
    """Fields for a catalog entry's settings: `values` are stored settings (redacted, when
    editing) or what was just typed; defaults fill the rest of a new form."""
    fields = []
    for spec in specs:
        name, kind = spec["name"], spec["type"]
        value = values[name] if name in values else (None if editing else spec["default"])
        secret_set = kind == "secret" and isinstance(value, Mapping) and bool(value.get("set"))
        input_type = _INPUT_TYPES.get(kind, "url" if name.endswith("url") else "text")
        fields.append(
            Field(
                name=SETTING_PREFIX + name,
                id=f"setting-{name}",
                label=spec["label"],
                help=spec["help"] + (" Separate values with commas." if kind == "list" else ""),
                input=input_type,
                required=spec["required"] and not secret_set,
                value=_text(kind, value),
                checked=kind == "boolean" and _checked(value),
                choices=tuple(spec["choices"]),
                advanced=spec["advanced"],
                secret_set=secret_set,
                step="1" if kind == "integer" else "any",
                error=errors.get(name, ""),
            )
        )
    return fields


def settings_from_form(form: FormData, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings a form holds, as strings the service layer coerces; empty fields are left
    out (a default applies, or, when editing, a secret keeps its value)."""
    settings: dict[str, Any] = {}
    for spec in specs:
        values = [v for v in form.getlist(SETTING_PREFIX + spec["name"]) if isinstance(v, str)]
        if not values:
            continue
        value = values[-1]  # a checkbox follows its hidden "false"
        if spec["type"] != "secret":
            value = value.strip()
        if value:
            settings[spec["name"]] = value
    return settings


def typed_settings(form: FormData, specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Settings typed into a form, kept for re-rendering it after an error (never secrets)."""
    kept = settings_from_form(form, specs)
    return {name: value for name, value in kept.items() if not _is_secret(specs, name)}


def _is_secret(specs: list[dict[str, Any]], name: str) -> bool:
    return any(spec["name"] == name and spec["type"] == "secret" for spec in specs)


def names(text: str) -> list[str]:
    """Names separated by commas or lines, deduplicated and sorted."""
    return sorted({part.strip() for part in text.replace("\n", ",").split(",") if part.strip()})


def filters_from_form(form: FormData) -> dict[str, list[str]]:
    """Event filters from the destination page: the call types ticked (all ticked: no type
    filter) and the event names to keep or to drop."""
    ticked = sorted({v for v in form.getlist("types") if isinstance(v, str)})
    if not ticked:
        raise ServiceError("tick at least one event type to send", field="types")
    filters: dict[str, list[str]] = {}
    if set(ticked) != set(EVENT_TYPES):
        filters["allow_types"] = ticked
    for key in ("allow_events", "block_events"):
        value = form.get(key)
        found = names(value) if isinstance(value, str) else []
        if found:
            filters[key] = found
    return filters


def ticked_types(filters: Mapping[str, Any]) -> list[str]:
    allowed = filters.get("allow_types") or EVENT_TYPES
    blocked = set(filters.get("block_types") or ())
    return [t for t in EVENT_TYPES if t in allowed and t not in blocked]
