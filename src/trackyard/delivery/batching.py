"""Cutting payloads into requests by the destination's batching policy. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from trackyard.destinations.base import Batching, Destination, DestinationSettings, Payload, Request

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Planned(Generic[T]):
    """A request and the items (whatever the caller tags payloads with) it carries, in body order."""

    request: Request
    items: list[T]


def cut_batches(
    payloads: Sequence[tuple[T, Payload]], policy: Batching
) -> list[tuple[str, list[tuple[T, Any]]]]:
    """Group payloads by endpoint, keeping log order, into runs within max_events and max_bytes."""
    if policy.max_events == 1:  # one payload per request: no need to measure sizes
        return [(payload.endpoint, [(tag, payload.body)]) for tag, payload in payloads]
    open_runs: dict[str, tuple[list[tuple[T, Any]], int]] = {}
    done: list[tuple[str, list[tuple[T, Any]]]] = []
    for tag, payload in payloads:
        size = len(orjson.dumps(payload.body, option=orjson.OPT_NON_STR_KEYS)) + 1
        run, run_bytes = open_runs.get(payload.endpoint, ([], 0))
        if run and (len(run) >= policy.max_events or run_bytes + size > policy.max_bytes):
            done.append((payload.endpoint, run))
            run, run_bytes = [], 0
        run.append((tag, payload.body))
        open_runs[payload.endpoint] = (run, run_bytes + size)
    done.extend((endpoint, run) for endpoint, (run, _) in open_runs.items() if run)
    return done


def plan_requests(
    destination: Destination[Any], settings: DestinationSettings, payloads: Sequence[tuple[T, Payload]]
) -> list[Planned[T]]:
    """The requests that carry `payloads`, each with the tags of the payloads it holds."""
    policy = destination.batching_policy(settings)
    return [
        Planned(destination.request(endpoint, [body for _, body in run], settings), [tag for tag, _ in run])
        for endpoint, run in cut_batches(payloads, policy)
    ]


def render(
    destination: Destination[Any], settings: DestinationSettings, events: Sequence[dict]
) -> list[Request]:
    """Translate events and build the requests, as the engine would send them (for tests and dry runs)."""
    payloads = [
        (index, payload)
        for index, event in enumerate(events)
        for payload in destination.translate(event, settings)
    ]
    return [planned.request for planned in plan_requests(destination, settings, payloads)]
