"""The shape of a batch of events: every JSON path that held a value, with the kinds it held.

DuckDB's `json_structure` describes one event (objects with their keys; `"VARCHAR"`,
`"BIGINT"`, `"UBIGINT"`, `"DOUBLE"`, `"BOOLEAN"`, `"NULL"`; a list for an array; `"JSON"`
for an empty object). The loader asks DuckDB for the distinct structures of a batch and
merges them here into `Shape`: path → kinds. Arrays are leaves (they are loaded as JSON
text), so nothing inside an array is a path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson

Path = tuple[str, ...]


class Kind(StrEnum):
    OBJECT = "object"
    ARRAY = "array"
    STRING = "string"
    INTEGER = "integer"
    UINTEGER = "uinteger"  # a non-negative integer: may not fit a signed 64-bit column
    FLOAT = "float"
    BOOLEAN = "boolean"


SCALARS = frozenset(Kind) - {Kind.OBJECT}

_STRUCTURE_KINDS = {
    "VARCHAR": Kind.STRING,
    "BIGINT": Kind.INTEGER,
    "UBIGINT": Kind.UINTEGER,
    "HUGEINT": Kind.FLOAT,
    "DOUBLE": Kind.FLOAT,
    "BOOLEAN": Kind.BOOLEAN,
    "JSON": Kind.OBJECT,  # an empty object: no keys, so no columns
}

Shape = dict[Path, set[Kind]]


def add_structure(shape: Shape, structure: str) -> None:
    """Merge one event's `json_structure` into `shape`."""
    _walk(orjson.loads(structure), (), shape)


def _walk(node: Any, path: Path, shape: Shape) -> None:
    if isinstance(node, dict):
        if path:
            shape.setdefault(path, set()).add(Kind.OBJECT)
        for key, child in node.items():
            _walk(child, (*path, key), shape)
    elif isinstance(node, list):
        shape.setdefault(path, set()).add(Kind.ARRAY)
    elif node in _STRUCTURE_KINDS and path:
        shape.setdefault(path, set()).add(_STRUCTURE_KINDS[node])


def leaves_under(shape: Shape, root: Path) -> list[tuple[Path, frozenset[Kind]]]:
    """Paths below `root` that held a scalar or an array (and maybe objects too), in a stable order."""
    depth = len(root)
    found = [
        (path, frozenset(kinds))
        for path, kinds in shape.items()
        if len(path) > depth and path[:depth] == root and kinds & SCALARS
    ]
    return sorted(found)


def pointer(path: Path) -> str:
    """The JSON pointer (RFC 6901) of a path: `~` and `/` in keys are escaped."""
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in path)
