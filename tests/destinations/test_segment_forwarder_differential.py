"""Differential test: what Segment's own Python library (PyPI `segment-analytics-python`)
sends for the same calls, against what the forwarder sends for the Spec events.

The library posts to a FakeVendor in sync mode, given each event's ids, context,
integrations, messageId and (skew-corrected) timestamp. Normalisations, each a
documented difference:

1. Envelope: the library adds `sentAt` (its send time) and repeats the write key as
   `writeKey`; the forwarder authenticates with Basic auth only (the same header the
   library sends) and sends no `sentAt` on purpose (see the module docstring).
2. `context.library`: the library stamps itself (analytics-python); the forwarder keeps
   the library that recorded the event.
3. `timestamp`: the library writes `+00:00`, the log `Z`; compared as instants.
4. The library sends `null` for arguments not given (`category`, an alias's
   `anonymousId`); Segment treats null as absent, so nulls are dropped.
5. `channel`: the forwarder passes on the stored channel, which a library never sends.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import pytest
from segment.analytics import Client

from tests import spec_events
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.segment_forwarder import destination

WRITE_KEY = "wk_differential"


def ours(event: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    settings = parse_settings(destination.Settings, {"write_key": WRITE_KEY, "base_url": "http://fake"})
    [request] = render(destination, settings, [event])
    return request.url.removeprefix("http://fake"), dict(request.headers), orjson.loads(request.body)


def library_sends(call: Callable[[Client], object]) -> tuple[str, dict[str, str], dict[str, Any]]:
    ok = (200, {"Content-Type": "application/json"}, b'{"success": true}')
    with FakeVendor(lambda _: ok) as fake:
        call(Client(WRITE_KEY, host=fake.url, sync_mode=True, max_retries=0))
        [captured] = fake.received()
    return captured.path, captured.headers, captured.json()


def normalised(message: dict[str, Any], library: dict[str, Any]) -> dict[str, Any]:
    message = {key: value for key, value in message.items() if value is not None and key != "channel"}
    message["context"] = {**message["context"], "library": library}
    message["timestamp"] = datetime.fromisoformat(message["timestamp"].replace("Z", "+00:00"))
    return message


def common(event: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments every library call takes, from the stored event."""
    return {
        "context": copy.deepcopy(event["context"]),  # the library writes its name into it
        "timestamp": datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")),
        "integrations": event["integrations"],
        "message_id": event["messageId"],
    }


def call_for(event: dict[str, Any]) -> Callable[[Client], object]:
    """The library call that makes the same Spec message."""
    ids = {"user_id": event.get("userId"), "anonymous_id": event.get("anonymousId")}
    kind = event["type"]
    if kind == "identify":
        return lambda client: client.identify(traits=event["traits"], **ids, **common(event))
    if kind == "track":
        return lambda client: client.track(
            event=event["event"], properties=event["properties"], **ids, **common(event)
        )
    if kind in ("page", "screen"):
        method = "page" if kind == "page" else "screen"
        return lambda client: getattr(client, method)(
            name=event["name"], properties=event["properties"], **ids, **common(event)
        )
    if kind == "group":
        return lambda client: client.group(
            group_id=event["groupId"], traits=event["traits"], **ids, **common(event)
        )
    return lambda client: client.alias(
        previous_id=event["previousId"], user_id=event["userId"], **common(event)
    )


@pytest.mark.parametrize("event", spec_events.scenario(), ids=lambda event: event["messageId"])
def test_the_forwarder_sends_what_segments_library_sends(event):
    path, headers, body = ours(event)
    library_path, library_headers, library_body = library_sends(call_for(event))
    assert path == library_path == "/v1/batch"
    assert headers["Content-Type"] == library_headers["content-type"] == "application/json"
    assert headers["Authorization"] == library_headers["authorization"]
    assert set(library_body) - set(body) == {"sentAt", "writeKey"}
    assert library_body["writeKey"] == WRITE_KEY
    [message], [library_message] = body["batch"], library_body["batch"]
    library = event["context"]["library"]
    assert normalised(message, library) == normalised(library_message, library)
