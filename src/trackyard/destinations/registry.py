"""Every installed destination, found by importing the modules of this package.

A destination module exposes its instance as the module attribute `destination`;
adding a tool is adding one module, with no list to edit.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from functools import cache

from trackyard import destinations
from trackyard.destinations.base import Destination

_NOT_DESTINATIONS = frozenset({"base", "registry", "common"})
log = logging.getLogger(__name__)

broken: dict[str, str] = {}
"""Modules that failed to import, with the error: one broken tool must not take the catalog down."""


@cache
def catalog() -> dict[str, Destination]:
    """Installed destinations by slug, in catalog order (category, then name)."""
    found: list[Destination] = []
    for module_info in pkgutil.iter_modules(destinations.__path__):
        if module_info.name in _NOT_DESTINATIONS or module_info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{destinations.__name__}.{module_info.name}")
        except Exception as exc:
            broken[module_info.name] = f"{type(exc).__name__}: {exc}"
            log.error("destination module %s cannot be imported: %s", module_info.name, exc)
            continue
        instance = getattr(module, "destination", None)
        if isinstance(instance, Destination):
            found.append(instance)
    found.sort(key=lambda d: (str(d.category), d.name.lower()))
    return {d.slug: d for d in found}


def get(slug: str) -> Destination:
    try:
        return catalog()[slug]
    except KeyError:
        raise KeyError(
            f"no destination type {slug!r}; installed: {', '.join(catalog())} (see `trackyard destination catalog`)"
        ) from None
