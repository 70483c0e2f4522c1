"""Mixpanel: what we send, compared with what Mixpanel's own Python SDK (PyPI `mixpanel`) sends.

The SDK is pointed at a FakeVendor through its documented Consumer URLs and its real HTTP
requests are captured. Documented differences, normalised before comparing:

* transport: the SDK posts form-encoded `data=<one JSON object>` (with `verbose=1&ip=0`);
  we post JSON arrays, as Mixpanel's current ingestion reference shows;
* `time`: the SDK sends float seconds, we send integer milliseconds (Mixpanel takes both);
* `$insert_id`: the SDK draws uuid4().hex per call, we derive uuid5 from the messageId;
  only their format is compared;
* `mp_lib` / `$lib_version` name the sending library (`python` for the SDK);
* `token`: the SDK repeats the project token inside /import events; Mixpanel takes the
  project from the Basic credential, so we leave it out there;
* `$time` on profile updates: the SDK stamps its own clock; we let Mixpanel stamp arrival;
* `$ip` on profile updates: ours comes from `context.ip`, which the SDK has no notion of;
* `$create_alias`: the SDK sends it to /track; we send it to /import, which also takes it,
  so it carries the `time` and `$insert_id` /import requires.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import mixpanel
import orjson
import pytest

from tests import spec_events
from tests.destinations.test_mixpanel import (
    ANONYMOUS_ID,
    EVENT_TIME,
    PROFILE_SET,
    SECRET,
    TOKEN,
    USER_ID,
    decoded,
    mixpanel_settings,
)
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.mixpanel import destination

LIBRARY_KEYS = ("mp_lib", "$lib_version")
INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")


def accept_everything(_: Captured) -> Reply:
    return ok_json({"status": 1, "error": None})


@pytest.fixture
def fake() -> Iterator[FakeVendor]:
    with FakeVendor(accept_everything) as vendor:
        yield vendor


def sdk_client(fake: FakeVendor) -> mixpanel.Mixpanel:
    consumer = mixpanel.Consumer(
        events_url=f"{fake.url}/track",
        people_url=f"{fake.url}/engage",
        import_url=f"{fake.url}/import",
        groups_url=f"{fake.url}/groups",
    )
    return mixpanel.Mixpanel(TOKEN, consumer=consumer)


def sent_by_sdk(fake: FakeVendor) -> tuple[Captured, dict[str, Any]]:
    [captured] = fake.received()
    return captured, orjson.loads(captured.form()["data"])


def without(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in keys}


def test_track_matches_the_sdks_import_data(fake):
    event = spec_events.signed_up()
    [ours] = render(destination, mixpanel_settings(api_secret=SECRET), [event])
    [our_event] = decoded(ours)

    sdk_client(fake).import_data(
        api_key=None,
        distinct_id=USER_ID,
        event_name="Signed Up",
        timestamp=EVENT_TIME / 1000,
        properties={**event["properties"], "$device_id": ANONYMOUS_ID, "$user_id": USER_ID},
        api_secret=SECRET,
    )
    captured, sdk_event = sent_by_sdk(fake)

    assert (captured.method, captured.path) == ("POST", "/import")
    assert captured.headers["authorization"] == ours.header("Authorization")
    assert sdk_event["event"] == our_event["event"]
    sdk_properties, our_properties = sdk_event["properties"], our_event["properties"]
    assert round(sdk_properties["time"] * 1000) == our_properties["time"]
    assert INSERT_ID.match(sdk_properties["$insert_id"]) and INSERT_ID.match(our_properties["$insert_id"])
    comparable = without(sdk_properties, "time", "$insert_id", "token", *LIBRARY_KEYS)
    assert comparable == {key: our_properties[key] for key in comparable}


def test_identify_matches_the_sdks_people_set(fake):
    [ours] = render(destination, mixpanel_settings(), [spec_events.identify()])
    sdk_client(fake).people_set(USER_ID, PROFILE_SET)
    captured, sdk_record = sent_by_sdk(fake)
    assert captured.path == "/engage" == urlsplit(ours.url).path
    assert without(sdk_record, "$time") == without(decoded(ours)[0], "$ip")


def test_group_matches_the_sdks_group_set(fake):
    event = spec_events.group()
    [ours] = render(destination, mixpanel_settings(), [event])
    group_set = {
        "$name": "Initech",
        **{key: value for key, value in event["traits"].items() if key != "name"},
    }
    sdk_client(fake).group_set("$group_id", event["groupId"], group_set)
    captured, sdk_record = sent_by_sdk(fake)
    assert captured.path == "/groups"
    assert without(sdk_record, "$time") == decoded(ours)[0]


def test_alias_matches_the_sdks_create_alias(fake, monkeypatch):
    [ours] = render(destination, mixpanel_settings(id_merge="original"), [spec_events.alias()])
    [our_event] = decoded(ours)
    client = sdk_client(fake)
    # The SDK sends aliases through a Consumer of its own making: point that one at the fake.
    sdk_consumer = mixpanel.Consumer
    monkeypatch.setattr(mixpanel, "Consumer", lambda: sdk_consumer(events_url=f"{fake.url}/track"))

    client.alias(USER_ID, ANONYMOUS_ID)
    captured, sdk_event = sent_by_sdk(fake)

    assert captured.path == "/track"
    assert sdk_event["event"] == our_event["event"] == "$create_alias"
    assert sdk_event["properties"] == without(our_event["properties"], "time", "$insert_id")
