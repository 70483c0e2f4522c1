"""Differential test: what the official SDK (PyPI `posthog`, capture mode v0) sends for the
same calls, against what trackyard sends for the Spec events.

The SDK posts to a FakeVendor. Each Spec event is translated with an empty context, so
that trackyard adds no context-derived properties and the comparison is about PostHog's
own wire shape: envelope, path, event names, where traits, group and alias fields go,
the uuid and the timestamp. Normalisations, each a documented difference:

1. `sent_at` (envelope): the SDK stamps its send time; trackyard omits it on purpose,
   because the stored timestamp is already skew-corrected and a retried request would
   carry a stale `sent_at` (see the module docstring).
2. SDK runtime properties: `$lib`/`$lib_version` = posthog-python, `$python_runtime`,
   `$python_version`, `$os`, `$os_version`, `$os_distro` (the machine running the SDK),
   `$is_server`. trackyard's `$lib` names the SDK that recorded the event instead.
3. `timestamp`: the SDK rewrites it as `+00:00` with microseconds; compared as instants.
4. `set()` puts `$set` at the top level of the event; trackyard puts it in `properties`,
   as the classic Segment destination and PostHog's capture docs do (ingestion reads both).
5. `alias()`: the SDK repeats `distinct_id` inside `properties`; trackyard's
   `$create_alias` {distinct_id: userId, alias: previousId} is the SDK's
   alias(previous_id=userId, distinct_id=previousId).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import posthog
import pytest

from tests import spec_events
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.posthog import destination

API_KEY = "phc_differential"
SDK_ONLY_PROPERTIES = {
    "$lib",
    "$lib_version",
    "$python_runtime",
    "$python_version",
    "$os",
    "$os_version",
    "$os_distro",
    "$is_server",
}


def without_context(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "context": {}}


def ours(event: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    settings = parse_settings(destination.Settings, {"api_key": API_KEY, "base_url": "http://fake"})
    [request] = render(destination, settings, [event])
    return request.url.removeprefix("http://fake"), dict(request.headers), orjson.loads(request.body)


def sdk_sends(call: Callable[[Any], object]) -> tuple[str, dict[str, str], dict[str, Any]]:
    with FakeVendor() as fake:
        client = posthog.Posthog(
            API_KEY, host=fake.url, sync_mode=True, capture_mode="v0", disable_geoip=True, max_retries=0
        )
        call(client)
        client.shutdown()
        [captured] = fake.received()
    return captured.path, captured.headers, captured.json()


def normalised(envelope: dict[str, Any]) -> dict[str, Any]:
    envelope = {key: value for key, value in envelope.items() if key != "sent_at"}
    envelope["batch"] = [normalised_event(item) for item in envelope["batch"]]
    return envelope


def normalised_event(item: dict[str, Any]) -> dict[str, Any]:
    item = dict(item)
    properties = {k: v for k, v in item.get("properties", {}).items() if k not in SDK_ONLY_PROPERTIES}
    if "$set" in item:
        properties["$set"] = item.pop("$set")
    if item["event"] == "$create_alias":
        properties.pop("distinct_id", None)
    item["properties"] = properties
    item["timestamp"] = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00"))
    return item


def compare(event: dict[str, Any], call: Callable[[Any, dict[str, Any]], object]) -> None:
    path, headers, body = ours(event)
    uuid = body["batch"][0]["uuid"]
    sdk_path, sdk_headers, sdk_body = sdk_sends(lambda client: call(client, {"uuid": uuid}))
    assert path == sdk_path == "/batch/"
    assert headers["Content-Type"] == sdk_headers["content-type"] == "application/json"
    assert sdk_body["batch"][0]["uuid"] == uuid, "the SDK replaces a malformed uuid: ours must be valid"
    assert normalised(body) == normalised(sdk_body)


@pytest.mark.parametrize(
    "make",
    [spec_events.order_completed, spec_events.product_viewed, spec_events.signed_up],
)
def test_track_matches_sdk_capture(make):
    event = without_context(make())
    compare(
        event,
        lambda client, ids: client.capture(
            event["event"],
            distinct_id=event["userId"],
            properties=event["properties"],
            timestamp=event["timestamp"],
            **ids,
        ),
    )


def test_page_matches_sdk_pageview_capture():
    event = without_context(spec_events.page())
    page_view = {
        **event["properties"],
        "$current_url": "https://shop.example/pricing",
        "$pathname": "/pricing",
        "$referrer": "https://www.google.com/",
        "$host": "shop.example",
    }
    compare(
        event,
        lambda client, ids: client.capture(
            "$pageview",
            distinct_id=event["userId"],
            properties=page_view,
            timestamp=event["timestamp"],
            **ids,
        ),
    )


def test_screen_matches_sdk_screen_capture():
    event = without_context(spec_events.screen())
    compare(
        event,
        lambda client, ids: client.capture(
            "$screen",
            distinct_id=event["userId"],
            properties={**event["properties"], "$screen_name": "Home"},
            timestamp=event["timestamp"],
            **ids,
        ),
    )


def test_identify_matches_sdk_identify_capture():
    event = without_context(spec_events.identify())
    compare(
        event,
        lambda client, ids: client.capture(
            "$identify",
            distinct_id=event["userId"],
            properties={"$set": event["traits"], "$anon_distinct_id": event["anonymousId"]},
            timestamp=event["timestamp"],
            **ids,
        ),
    )


def test_anonymous_identify_matches_sdk_set():
    event = without_context(spec_events.identify())
    event.pop("userId")
    compare(
        event,
        lambda client, ids: client.set(
            distinct_id=event["anonymousId"], properties=event["traits"], timestamp=event["timestamp"], **ids
        ),
    )


def test_group_matches_sdk_group_identify():
    event = without_context(spec_events.group())
    compare(
        event,
        lambda client, ids: client.group_identify(
            "segment_group",
            event["groupId"],
            event["traits"],
            timestamp=event["timestamp"],
            distinct_id=event["userId"],
            **ids,
        ),
    )


def test_alias_matches_sdk_alias_of_the_user_to_the_previous_id():
    event = without_context(spec_events.alias())
    compare(
        event,
        lambda client, ids: client.alias(
            previous_id=event["userId"], distinct_id=event["previousId"], timestamp=event["timestamp"], **ids
        ),
    )
