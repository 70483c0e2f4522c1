"""The JSON schemas of the admin API: declared once, used to check input and to write the
OpenAPI document, so the document cannot drift from what the handlers accept.

Only the part of JSON Schema the API uses is checked: type, properties, required,
additionalProperties, items, enum, minLength/maxLength, minimum/maximum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Schema = dict[str, Any]

ANY: Schema = {}
STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 200}


def obj(required: tuple[str, ...] = (), extra: Schema | bool = False, /, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def string_list() -> Schema:
    return array(STRING)


class InvalidInput(ValueError):
    """Input that does not match its schema; `field` is the dotted path of the culprit."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def check(schema: Schema, value: Any, where: str = "") -> None:
    """Raise InvalidInput when `value` does not match `schema`; `where` is its dotted path
    (empty for the whole request body)."""
    kind = schema.get("type")
    if kind is not None:
        _check_type(kind, value, where)
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidInput(f"{_label(where)} must be one of {', '.join(map(str, schema['enum']))}", where)
    if isinstance(value, str):
        _check_length(schema, value, where)
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_range(schema, value, where)
    if isinstance(value, dict):
        _check_object(schema, value, where)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            check(schema["items"], item, f"{where}[{index}]")


def _label(where: str) -> str:
    return where or "the request body"


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check_type(kind: str, value: Any, where: str) -> None:
    matches = isinstance(value, _PYTHON_TYPES[kind])
    if isinstance(value, bool) and kind != "boolean":
        matches = False
    if not matches:
        raise InvalidInput(f"{_label(where)} must be {'an' if kind[0] in 'aeio' else 'a'} {kind}", where)


def _check_length(schema: Schema, value: str, where: str) -> None:
    if len(value) < schema.get("minLength", 0):
        raise InvalidInput(f"{_label(where)} must not be empty", where)
    if len(value) > schema.get("maxLength", len(value)):
        raise InvalidInput(f"{_label(where)} must be at most {schema['maxLength']} characters", where)


def _check_range(schema: Schema, value: float, where: str) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        raise InvalidInput(f"{_label(where)} must be at least {schema['minimum']}", where)
    if "maximum" in schema and value > schema["maximum"]:
        raise InvalidInput(f"{_label(where)} must be at most {schema['maximum']}", where)


def _check_object(schema: Schema, value: Mapping[str, Any], where: str) -> None:
    properties: Mapping[str, Schema] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            raise InvalidInput(f"{_join(where, name)} is required", _join(where, name))
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        path = _join(where, name)
        if name in properties:
            check(properties[name], item, path)
        elif extra is False:
            raise InvalidInput(f"{path} is not a known field; expected one of: {', '.join(properties)}", path)
        elif isinstance(extra, dict):
            check(extra, item, path)


def query_value(schema: Schema, raw: str, name: str) -> Any:
    """A query parameter as its schema's type (they arrive as strings), checked."""
    value: Any = raw
    kind = schema.get("type")
    if kind == "integer":
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInput(f"query parameter {name} must be an integer", name) from None
    elif kind == "boolean":
        if raw.lower() not in ("true", "false"):
            raise InvalidInput(f"query parameter {name} must be true or false", name)
        value = raw.lower() == "true"
    check(schema, value, name)
    return value
