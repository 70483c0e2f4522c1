"""A fake Slack incoming webhook that checks the documented contract, and our requests against it.

The contract (Slack "Sending messages using incoming webhooks" and its error table;
destinations-analytics.md §8.3): `POST` to the webhook's own path (an unknown or revoked
webhook answers `404 no_service`), a JSON body (`400 invalid_payload` otherwise) with a
non-empty `text` (`400 no_text`), an existing channel when `channel` is given
(`404 channel_not_found`, `410 channel_is_archived`), string `username`/`icon_url`/
`icon_emoji`. Success is `200` with the plain-text body `ok`; errors are plain-text codes.
"""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, Response, Verdict, parse_settings
from trackyard.destinations.slack import SlackSettings, destination

WEBHOOK_PATH = "/services/T000/B000/XXXX"
CHANNELS = frozenset({"#general", "general", "#sales", "sales", "@peter"})
ARCHIVED = frozenset({"#old", "old"})
OPTIONAL_TEXT_FIELDS = ("username", "icon_url", "icon_emoji")


def plain(status: int, body: str) -> Reply:
    return status, {"Content-Type": "text/plain"}, body.encode()


def slack_contract(request: Captured) -> Reply:
    """Answer as a Slack incoming webhook does."""
    if (request.method, request.path) != ("POST", WEBHOOK_PATH):
        return plain(404, "no_service")
    if not request.headers.get("content-type", "").startswith("application/json"):
        return plain(400, "invalid_payload")
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return plain(400, "invalid_payload")
    if not isinstance(body, dict) or any(
        not isinstance(body.get(field, ""), str) for field in (*OPTIONAL_TEXT_FIELDS, "channel")
    ):
        return plain(400, "invalid_payload")
    if not (isinstance(body.get("text"), str) and body["text"].strip()):
        return plain(400, "no_text")
    channel = body.get("channel")
    if channel in ARCHIVED:
        return plain(410, "channel_is_archived")
    if channel is not None and channel not in CHANNELS:
        return plain(404, "channel_not_found")
    return plain(200, "ok")


def settings(vendor: FakeVendor, **overrides: str) -> SlackSettings:
    raw = {"webhook_url": f"https://hooks.slack.com{WEBHOOK_PATH}", "base_url": vendor.url, **overrides}
    return parse_settings(SlackSettings, raw, "slack")


def send(request: Request) -> httpx.Response:
    return httpx.request(request.method, request.url, headers=dict(request.headers), content=request.body)


def test_the_whole_spec_scenario_is_accepted():
    with FakeVendor(slack_contract) as vendor:
        configured = settings(
            vendor,
            whitelisted_traits="email,plan",
            channels='{"Order Completed": "#sales"}',
            templates='{"/^Product/": "{{name}} looked at {{properties.name}}"}',
            username="trackyard",
        )
        sent = [event for event in spec_events.scenario() if event["type"] in ("identify", "track")]
        requests = render(destination, configured, sent)
        answers = [send(request) for request in requests]
        assert [(answer.status_code, answer.text) for answer in answers] == [(200, "ok")] * 7
        assert [orjson.loads(captured.body)["text"] for captured in vendor.received()] == [
            "Identified user Peter Gibbons.\nemail: peter@example.com\nplan: premium",
            "peter@example.com looked at Monopoly: 3rd Edition",
            "peter@example.com looked at Monopoly: 3rd Edition",
            "peter@example.com did Checkout Started.",
            "peter@example.com did Order Completed.",
            "peter@example.com looked at ",
            "peter@example.com did Signed Up.",
        ]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"url_path": "/services/T000/B000/REVOKED"}, 404, "no_service"),
        ({"body": b'{"channel": "#general"}'}, 400, "no_text"),
        (
            {
                "body": b"payload=%7B%22text%22%3A%22hi%22%7D",
                "content_type": "application/x-www-form-urlencoded",
            },
            400,
            "invalid_payload",
        ),
        ({"body": b'{"text": "hi", "channel": "#nowhere"}'}, 404, "channel_not_found"),
        ({"body": b'{"text": "hi", "channel": "#old"}'}, 410, "channel_is_archived"),
        ({"body": b'{"text": "hi", "username": 7}'}, 400, "invalid_payload"),
    ],
)
def test_the_fake_rejects_broken_requests_and_we_give_them_up(change, status, code):
    with FakeVendor(slack_contract) as vendor:
        [request] = render(destination, settings(vendor), [spec_events.signed_up()])
        url = request.url.replace(WEBHOOK_PATH, change.get("url_path", WEBHOOK_PATH))
        headers = {"Content-Type": change.get("content_type", request.header("Content-Type"))}
        answer = httpx.post(url, headers=headers, content=change.get("body", request.body))
    assert (answer.status_code, answer.text) == (status, code)
    outcome = destination.classify(Response(status, {}, answer.content), request, 1)
    assert (outcome.verdict, outcome.reason) == (Verdict.GIVE_UP, f"HTTP {status}: {code}")
