"""Prometheus metrics of the delivery engine (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERY_EVENTS = Counter(
    "trackyard_delivery_events_total",
    "Events handled per destination, by outcome (delivered, retried, failed, filtered).",
    ["destination", "outcome"],
)
REQUEST_LATENCY = Histogram(
    "trackyard_delivery_request_seconds",
    "Latency of HTTP requests to destinations.",
    ["destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END_LATENCY = Histogram(
    "trackyard_delivery_latency_seconds",
    "From an event's receipt (receivedAt) to its delivery.",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
CONSUMER_LAG = Gauge(
    "trackyard_consumer_lag_events",
    "Events in the log not yet settled by a destination's consumer.",
    ["destination"],
)
