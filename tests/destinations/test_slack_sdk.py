"""Differential test: our Slack requests against the official SDK's (PyPI `slack-sdk`, `WebhookClient`).

`WebhookClient(url).send(text=…)` posts to the webhook URL, which is pointed at a local
FakeVendor; `send_dict` is the SDK's call for fields `send` has no argument for (`channel`,
`username`, `icon_url`, `icon_emoji`). Compared: method, path, Content-Type (exactly) and
the decoded JSON body. Documented differences, not compared: the SDK's `User-Agent`
(Python and SDK versions) and its JSON spacing (`json.dumps` vs compact), which Slack
ignores.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from slack_sdk.webhook import WebhookClient

from tests import spec_events
from tests.destinations.test_slack_contract import WEBHOOK_PATH, slack_contract
from tests.fakes import FakeVendor
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, parse_settings
from trackyard.destinations.slack import SlackSettings, destination


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(slack_contract) as fake:
        yield fake


def ours(vendor: FakeVendor, event: dict[str, Any], **overrides: str) -> Request:
    raw = {"webhook_url": f"{vendor.url}{WEBHOOK_PATH}", "whitelisted_traits": "email", **overrides}
    [request] = render(destination, parse_settings(SlackSettings, raw, "slack"), [event])
    return request


def assert_same_request(vendor: FakeVendor, request: Request) -> None:
    theirs = vendor.received()[-1]
    assert (theirs.method, f"{vendor.url}{theirs.path}") == (request.method, request.url)
    assert theirs.headers["content-type"] == request.header("Content-Type")
    assert theirs.json() == orjson.loads(request.body)


@pytest.mark.parametrize(
    "event",
    [event for event in spec_events.scenario() if event["type"] in ("identify", "track")],
    ids=lambda event: event.get("event", event["type"]),
)
def test_text_messages_match_the_sdks_send(vendor, event):
    request = ours(vendor, event)
    response = WebhookClient(request.url).send(text=orjson.loads(request.body)["text"])
    assert (response.status_code, response.body) == (200, "ok")
    assert_same_request(vendor, request)


def test_channel_username_and_icons_match_the_sdks_send_dict(vendor):
    request = ours(
        vendor,
        spec_events.order_completed(),
        channels='{"Order Completed": "#sales"}',
        username="trackyard",
        icon_url="https://shop.example/logo.png",
        icon_emoji=":moneybag:",
    )
    body = orjson.loads(request.body)
    assert set(body) == {"text", "channel", "username", "icon_url", "icon_emoji"}
    response = WebhookClient(request.url).send_dict(body)
    assert (response.status_code, response.body) == (200, "ok")
    assert_same_request(vendor, request)
