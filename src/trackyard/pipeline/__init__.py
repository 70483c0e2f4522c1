"""What happens to an event on its way to one destination: routing by the integrations object,
device-mode bundling and per-destination event filters. Pure."""

from trackyard.pipeline.routing import EventFilter, route

__all__ = ["EventFilter", "route"]
