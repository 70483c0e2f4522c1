"""Storage errors callers are expected to handle."""


class StoreError(Exception):
    """Base class of storage errors."""


class StoreUnavailable(StoreError):
    """The store cannot accept writes right now (disk full, database down, lock timeout)."""
