"""Errors of the warehouse room. They are ValueErrors: the CLI prints them without a traceback."""

from __future__ import annotations


class WarehouseError(ValueError):
    """A warehouse cannot be configured or loaded as asked; the message says why and what to do."""


class WarehouseBusy(WarehouseError):
    """Another process holds the warehouse (a DuckDB file open in a shell, or another loader)."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse cannot be reached or refused the load; the next sync tries again."""


class PositionMoved(WarehouseError):
    """Another loader loaded these events first; the batch is read again from its position."""
