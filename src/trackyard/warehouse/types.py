"""Warehouse column types and the widening lattice.

Segment's five types, ordered so that a column can only grow:

    boolean < integer < float < varchar        timestamp < varchar

`join` gives the narrowest type that holds both values: a column of integers that
receives a float becomes float; anything that meets a string that is not a timestamp,
or a timestamp that meets a number, becomes varchar. Segment fixes a column's type on
its first value and casts later values best-effort; we widen instead, so no value is
ever lost (contract §4.5; the deviation is documented in docs/warehouse.md).
"""

from __future__ import annotations

from enum import StrEnum


class ColumnType(StrEnum):
    BOOLEAN = "boolean"
    INTEGER = "integer"
    FLOAT = "float"
    TIMESTAMP = "timestamp"
    VARCHAR = "varchar"


_NUMERIC_RANK = {ColumnType.BOOLEAN: 0, ColumnType.INTEGER: 1, ColumnType.FLOAT: 2}


def join(a: ColumnType | None, b: ColumnType | None) -> ColumnType | None:
    """The narrowest type holding values of both types (None: no value seen yet)."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if a in _NUMERIC_RANK and b in _NUMERIC_RANK:
        return a if _NUMERIC_RANK[a] > _NUMERIC_RANK[b] else b
    return ColumnType.VARCHAR


def join_all(types: set[ColumnType]) -> ColumnType | None:
    result: ColumnType | None = None
    for kind in sorted(types):
        result = join(result, kind)
    return result
