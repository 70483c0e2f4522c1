"""Slack: Spec events → exact incoming-webhook requests, templates, names, response classification."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests import spec_events
from trackyard.delivery.batching import render
from trackyard.destinations import registry
from trackyard.destinations.base import (
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.slack import SlackSettings, destination, display_name
from trackyard.destinations.slack import render as render_template

WEBHOOK = "https://hooks.slack.com/services/T000/B000/XXXX"
HEADERS = (("Content-Type", "application/json;charset=utf-8"),)


def settings(**overrides: Any) -> SlackSettings:
    return parse_settings(SlackSettings, {"webhook_url": WEBHOOK, **overrides}, "slack")


def message(event: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    [request] = render(destination, settings(**overrides), [event])
    assert (request.method, request.url, request.headers) == ("POST", WEBHOOK, HEADERS)
    return orjson.loads(request.body)


def test_the_destination_is_in_the_catalog_under_segments_name():
    found = registry.get("slack")
    assert (found.slug, found.name, found.default_rate_limit) == ("slack", "Slack", 1.0)


# -- track -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        spec_events.product_viewed,
        spec_events.product_added,
        spec_events.checkout_started,
        spec_events.order_completed,
        spec_events.products_searched,
        spec_events.signed_up,
    ],
    ids=lambda make: make.__name__,
)
def test_every_track_event_gets_the_default_message(make):
    event = make()
    # The Spec events carry only context.traits.email, the fifth name in Segment's order.
    assert message(event) == {"text": f"peter@example.com did {event['event']}."}


def test_an_exact_template_wins_over_a_matching_regex():
    templates = {
        "/^Order/": "regex: {{event}}",
        "Order Completed": "{{name}} spent {{properties.revenue}} {{properties.currency}} on {{properties.products.0.name}}",
    }
    assert message(spec_events.order_completed(), templates=orjson.dumps(templates).decode()) == {
        "text": "peter@example.com spent 25 USD on Monopoly: 3rd Edition"
    }


def test_regex_templates_match_in_order_with_javascript_flags():
    templates = orjson.dumps(
        {"/^checkout/i": "first: {{event}}", "/Checkout/": "second: {{event}}", "/[a-z]+ing$/g": "ing"}
    ).decode()
    assert message(spec_events.checkout_started(), templates=templates) == {"text": "first: Checkout Started"}
    assert message(spec_events.track("Onboarding", {}, "m-1"), templates=templates) == {"text": "ing"}
    assert message(spec_events.signed_up(), templates=templates) == {
        "text": "peter@example.com did Signed Up."
    }


def test_templates_see_the_whole_message():
    template = "{{userId}} / {{anonymousId}} / {{context.ip}} / {{properties.trial}} / {{properties.seats}}"
    assert message(spec_events.signed_up(), templates=orjson.dumps({"Signed Up": template}).decode()) == {
        "text": "97980cfea0067 / 507f191e810c19729de860ea / 203.0.113.7 / true / 3"
    }


def test_objects_arrays_nulls_and_missing_values_render_as_nothing():
    event = spec_events.signed_up()
    event["properties"].update(nothing=None, price=3.0, ratio=0.25)
    template = "[{{properties}}][{{context.page}}][{{properties.nothing}}][{{nope.deeper}}][{{properties.price}}][{{properties.ratio}}]"
    assert message(event, templates=orjson.dumps({"Signed Up": template}).decode()) == {
        "text": "[][][][][3][0.25]"
    }


def test_values_are_escaped_for_slack_unless_triple_braced():
    event = spec_events.signed_up()
    event["properties"]["plan"] = "<https://evil.example|pro> & co"
    template = "{{properties.plan}} | {{{properties.plan}}} | <{{ properties.plan }}>"
    assert message(event, templates=orjson.dumps({"Signed Up": template}).decode()) == {
        "text": "&lt;https://evil.example|pro&gt; &amp; co | <https://evil.example|pro> & co | "
        "<&lt;https://evil.example|pro&gt; &amp; co>"
    }


def test_bracketed_keys_reach_names_with_spaces_and_dots():
    event = spec_events.signed_up()
    event["properties"]["Plan Name"] = "Pro"
    event["properties"]["v1.2"] = "yes"
    template = "{{properties.[Plan Name]}} {{properties.[v1.2]}}"
    assert message(event, templates=orjson.dumps({"Signed Up": template}).decode()) == {"text": "Pro yes"}


def test_channels_route_events_by_name_or_regex():
    channels = orjson.dumps({"Order Completed": "#sales", "/^Product/": "@peter"}).decode()
    assert message(spec_events.order_completed(), channels=channels) == {
        "text": "peter@example.com did Order Completed.",
        "channel": "#sales",
    }
    assert message(spec_events.product_added(), channels=channels)["channel"] == "@peter"
    assert "channel" not in message(spec_events.signed_up(), channels=channels)


def test_username_and_icons_are_sent_only_when_set():
    assert message(
        spec_events.signed_up(),
        username="trackyard",
        icon_url="https://shop.example/logo.png",
        icon_emoji=":tada:",
    ) == {
        "text": "peter@example.com did Signed Up.",
        "username": "trackyard",
        "icon_url": "https://shop.example/logo.png",
        "icon_emoji": ":tada:",
    }


def test_a_message_that_renders_empty_is_skipped():
    with pytest.raises(Skip, match="empty message"):
        destination.translate(spec_events.signed_up(), settings(templates='{"Signed Up": "{{nothing}}"}'))


# -- names -------------------------------------------------------------------------------


NAME_ORDER = [
    (
        {"name": "Peter Gibbons", "firstName": "P", "username": "pg", "email": "t@x"},
        {"email": "p@x"},
        "Peter Gibbons",
    ),
    (
        {"firstName": "Peter", "lastName": "Gibbons", "username": "pg", "email": "t@x"},
        {"email": "p@x"},
        "Peter Gibbons",
    ),
    ({"firstName": "Peter", "username": "pg"}, {}, "Peter"),
    ({"username": "pg", "email": "t@x"}, {"email": "p@x"}, "pg"),
    ({"email": "t@x"}, {"email": "p@x"}, "p@x"),
    ({"email": "t@x"}, {}, "t@x"),
    ({}, {}, "User 97980cfea0067"),
]


@pytest.mark.parametrize(("traits", "properties", "expected"), NAME_ORDER)
def test_name_follows_segments_order(traits, properties, expected):
    event = spec_events.track("Tested", properties, "m-1")
    event["context"]["traits"] = traits
    assert display_name(event, traits) == expected


def test_name_falls_back_to_the_anonymous_id():
    event = spec_events.track("Tested", {}, "m-1")
    del event["userId"]
    assert display_name(event, {}) == "Anonymous user 507f191e810c19729de860ea"


# -- identify ----------------------------------------------------------------------------


def test_identify_lists_the_whitelisted_traits_under_the_default_template():
    assert message(spec_events.identify(), whitelisted_traits="email,plan,logins") == {
        "text": "Identified user Peter Gibbons.\nemail: peter@example.com\nplan: premium\nlogins: 5"
    }


def test_identify_templates_use_traits_as_variables():
    assert message(
        spec_events.identify(),
        whitelisted_traits="email",
        identify_template="The user {{name}} has an email of {{email}} ({{address.city}}, {{userId}})",
    ) == {"text": "The user Peter Gibbons has an email of peter@example.com (San Francisco, 97980cfea0067)"}


def test_identify_is_skipped_without_whitelisted_traits():
    with pytest.raises(Skip, match="whitelisted traits"):
        destination.translate(spec_events.identify(), settings())


def test_identify_is_skipped_unless_it_has_every_whitelisted_trait():
    with pytest.raises(Skip, match=r"lacks whitelisted trait\(s\): company, title"):
        destination.translate(spec_events.identify(), settings(whitelisted_traits="email,company,title"))


@pytest.mark.parametrize("make", [spec_events.page, spec_events.screen, spec_events.group, spec_events.alias])
def test_page_screen_group_and_alias_are_not_sent(make):
    with pytest.raises(Skip, match="does not take"):
        destination.translate(make(), settings())


# -- requests, batching, settings --------------------------------------------------------


def test_base_url_replaces_the_host_and_keeps_the_webhook_path():
    [request] = render(destination, settings(base_url="http://127.0.0.1:9"), [spec_events.signed_up()])
    assert request.url == "http://127.0.0.1:9/services/T000/B000/XXXX"


def test_2500_events_make_2500_requests_of_one_message_each():
    events = [spec_events.track(f"Event {index}", {}, f"m-{index}") for index in range(2_500)]
    requests = render(destination, settings(), events)
    assert [orjson.loads(request.body)["text"] for request in requests] == [
        f"peter@example.com did Event {index}." for index in range(2_500)
    ]


def test_the_webhook_url_is_a_required_secret():
    with pytest.raises(SettingsError, match="'webhook_url'"):
        parse_settings(SlackSettings, {}, "slack")
    with pytest.raises(SettingsError, match="'webhook_url' must be an http"):
        parse_settings(SlackSettings, {"webhook_url": "hooks.slack.com/services/x"}, "slack")
    schema = {spec.name: spec for spec in settings_schema(SlackSettings)}
    assert schema["webhook_url"].secret and schema["webhook_url"].required
    assert (schema["templates"].type, schema["channels"].type, schema["whitelisted_traits"].type) == (
        "mapping",
        "mapping",
        "list",
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"templates": '{"/[unclosed/": "x"}'}, r"'templates': key '/\[unclosed/' is not a valid regex"),
        ({"channels": '{"/x/q": "#c"}'}, r"'channels': key '/x/q' has unknown regex flag"),
        (
            {"templates": '{"A": "{{#if plan}}x{{/if}}"}'},
            r"'templates' \('A'\): '\{\{#if plan\}\}' is not supported",
        ),
        (
            {"identify_template": "{{> partial}}"},
            r"'identify_template': '\{\{> partial\}\}' is not supported",
        ),
    ],
)
def test_bad_templates_and_patterns_are_refused_when_saved(raw, error):
    with pytest.raises(SettingsError, match=error):
        parse_settings(SlackSettings, {"webhook_url": WEBHOOK, **raw}, "slack")


def test_the_renderer_tolerates_spaces_inside_braces():
    assert render_template("{{ a.b }}-{{{ a.c }}}", {"a": {"b": 1, "c": "<x>"}}) == "1-<x>"


# -- classification ----------------------------------------------------------------------


REQUEST = render(destination, settings(), [spec_events.signed_up()])[0]


def classify(status: int, body: bytes, headers: dict[str, str] | None = None):
    return destination.classify(Response(status, headers or {}, body), REQUEST, 1)


def test_ok_is_delivered():
    assert classify(200, b"ok").verdict == Verdict.DELIVERED


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, b"invalid_payload"),
        (400, b"no_text"),
        (403, b"action_prohibited"),
        (404, b"channel_not_found"),
        (404, b"no_service"),
        (410, b"channel_is_archived"),
    ],
)
def test_slacks_plain_text_errors_give_up_naming_the_code(status, code):
    outcome = classify(status, code)
    assert (outcome.verdict, outcome.reason) == (Verdict.GIVE_UP, f"HTTP {status}: {code.decode()}")


def test_429_is_retried_after_retry_after():
    outcome = classify(429, b"rate_limited", {"retry-after": "30"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 30.0)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(status):
    assert classify(status, b"rollup_error").verdict == Verdict.RETRY
