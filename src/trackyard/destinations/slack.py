"""Slack: a message per track or identify call, posted to an incoming webhook.

Decisions (destinations-analytics.md §8, Segment's classic Slack destination):
* Only track and identify are sent; other calls are skipped, as in Segment.
* Track messages use the first template whose key matches the event: an exact event name
  first, then `/regex/flags` keys in the order given (JavaScript-style; `i`, `m`, `s`
  honoured, `g` ignored; the regex is searched, not anchored). The default is
  `{{name}} did {{event}}.`. Templates see the whole message (`{{event}}`, `{{userId}}`,
  `{{properties.plan}}`, `{{context.ip}}`) plus `{{name}}`.
* Identify messages are sent only when `whitelisted_traits` is set and the call carries
  every one of them (Segment's rule). Their template (`identify_template`, default
  `Identified user {{name}}.` and a newline, then `{{traits}}`) sees the message, the
  traits as top-level variables (`{{email}}`) and `{{traits}}`: the whitelisted traits,
  one `key: value` per line. An identify's traits are its own `traits` over
  `context.traits`.
* `{{name}}`, in Segment's order: `traits.name` → `traits.firstName + " " + lastName` →
  `traits.username` → `properties.email` → `traits.email` → `"User " + userId` →
  `"Anonymous user " + anonymousId`, where traits are `context.traits` (track) or the
  identify's traits (identify; Segment's facade reads an identify's own traits).
* Templates are a small subset of Handlebars: `{{path.to.value}}` (segments may be
  `[quoted keys]`, numbers index arrays). Values are text: strings as they are, numbers as
  JavaScript prints them, booleans `true`/`false`; null, missing values, objects and
  arrays render as nothing (Segment printed `[object Object]`, which helps no one).
  `{{…}}` escapes `&`, `<`, `>` as Slack requires; `{{{…}}}` inserts the value raw (so a
  value may carry Slack link syntax). Block helpers (`{{#if}}`) are refused when settings
  are saved, as are invalid regex keys.
* `channels` maps an event name or `/regex/` to a channel (`#name`, `name` or `@user`,
  passed as written). Identify messages go to the webhook's own channel. The classic
  request body is undocumented (§13): we send `text`, plus `channel`, `username`,
  `icon_url` and `icon_emoji` only when set; modern Slack app webhooks may ignore them.
* A message that renders empty is skipped (Slack would answer `400 no_text`).
* One message per request; 1 request/s by default (Slack's incoming-webhook limit).
  Slack answers `200 ok`; plain-text errors (`400 invalid_payload`, `403
  action_prohibited`, `404 channel_not_found`, `410 channel_is_archived`) give up; 429
  is retried after Retry-After and 5xx retried.
* `base_url` replaces the scheme and host of the webhook URL, keeping its path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from trackyard.destinations.base import (
    Batching,
    Category,
    Destination,
    Event,
    HTTPSettings,
    Payload,
    Request,
    SettingsError,
    Skip,
    base_url,
    setting,
)

TRACK_TEMPLATE = "{{name}} did {{event}}."
IDENTIFY_TEMPLATE = "Identified user {{name}}.\n{{traits}}"
CONTENT_TYPE = "application/json;charset=utf-8"

_TAG = re.compile(r"\{\{\{(.*?)\}\}\}|\{\{(.*?)\}\}", re.DOTALL)
_SEGMENT = r"(?:[^\s.{}\[\]#/^>!&=]+|\[[^\]]+\])"
_PATH = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*$")
_PATH_PART = re.compile(rf"{_SEGMENT}")
_REGEX_KEY = re.compile(r"^/(.+)/([a-z]*)$", re.DOTALL)
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "g": 0, "u": 0, "y": 0}
_SLACK_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


@dataclass(frozen=True, kw_only=True)
class SlackSettings(HTTPSettings):
    webhook_url: str = setting(
        label="Incoming Webhook URL",
        secret=True,
        help="https://hooks.slack.com/services/T…/B…/…, from Slack → Apps → Incoming Webhooks.",
    )
    templates: dict[str, str] = setting(
        label="Event templates",
        default={},
        help='Event name or /regex/ → message template, as JSON: {"Signed Up": "{{name}} chose {{properties.plan}}"}.',
    )
    identify_template: str = setting(
        label="Identify template",
        default=IDENTIFY_TEMPLATE,
        help="Message for identify calls; traits are variables ({{email}}), {{traits}} lists the whitelisted ones.",
    )
    whitelisted_traits: list[str] = setting(
        label="Whitelisted traits",
        default=[],
        help="Identify calls are posted only when they carry all of these traits (comma-separated).",
    )
    channels: dict[str, str] = setting(
        label="Event channels",
        default={},
        help='Event name or /regex/ → channel or @user, as JSON: {"Order Completed": "#sales"}.',
    )
    username: str | None = setting(label="Bot username", default=None, help="Shown as the sender.")
    icon_url: str | None = setting(
        label="Bot icon URL", default=None, help="Image shown as the sender's icon."
    )
    icon_emoji: str | None = setting(
        label="Bot icon emoji", default=None, help="For example :chart_with_upwards_trend:."
    )

    def __post_init__(self) -> None:
        for name in ("templates", "channels"):
            for key in getattr(self, name):
                event_pattern(key, f"slack: setting {name!r}")
        for key, template in self.templates.items():
            check_template(template, f"slack: setting 'templates' ({key!r})")
        check_template(self.identify_template, "slack: setting 'identify_template'")


class Slack(Destination[SlackSettings]):
    slug = "slack"
    name = "Slack"
    category = Category.CUSTOM
    description = "Post a message to a Slack channel for every track event and for identified users."
    Settings = SlackSettings
    batching = Batching(max_events=1, max_bytes=40_000, max_wait=0.0)
    default_rate_limit = 1.0

    def track(self, event: Event, settings: SlackSettings) -> Payload:
        event_name = event.get("event")
        if not event_name:
            raise Skip("track has no event name")
        template = first_match(settings.templates, str(event_name)) or TRACK_TEMPLATE
        variables = {
            **event,
            "name": display_name(event, _mapping(_mapping(event.get("context")).get("traits"))),
        }
        channel = first_match(settings.channels, str(event_name))
        return _message(render(template, variables), settings, channel)

    def identify(self, event: Event, settings: SlackSettings) -> Payload:
        if not settings.whitelisted_traits:
            raise Skip("Slack posts identify calls only for whitelisted traits, and none are set")
        traits = identify_traits(event)
        missing = [trait for trait in settings.whitelisted_traits if traits.get(trait) is None]
        if missing:
            raise Skip(f"identify lacks whitelisted trait(s): {', '.join(missing)}")
        listing = "\n".join(f"{trait}: {text(traits[trait])}" for trait in settings.whitelisted_traits)
        variables = {**event, **traits, "name": display_name(event, traits), "traits": listing}
        return _message(render(settings.identify_template, variables), settings, None)

    def request(self, endpoint: str, bodies: list[Any], settings: SlackSettings) -> Request:
        parts = urlsplit(settings.webhook_url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        url = base_url(settings, f"{parts.scheme}://{parts.netloc}") + path
        return Request("POST", url, (("Content-Type", CONTENT_TYPE),), orjson.dumps(bodies[0]))


# -- templates ---------------------------------------------------------------------------


def check_template(template: str, where: str) -> None:
    """Refuse what the renderer does not support, so a bad template fails when saved."""
    for match in _TAG.finditer(template):
        expression = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
        if not _PATH.match(expression):
            raise SettingsError(
                f"{where}: {match.group(0)!r} is not supported; use {{{{path.to.value}}}} (no helpers or blocks)"
            )


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Replace each `{{path}}` (Slack-escaped) and `{{{path}}}` (raw) with the value's text."""

    def substitute(match: re.Match[str]) -> str:
        raw = match.group(1) is not None
        value = text(lookup(variables, (match.group(1) if raw else match.group(2)).strip()))
        return value if raw else value.translate(_SLACK_ESCAPES)

    return _TAG.sub(substitute, template)


def lookup(variables: Any, path: str) -> Any:
    """The value at a dotted path; `[key]` quotes a key, digits index arrays; None when absent."""
    value = variables
    for part in _PATH_PART.findall(path):
        key = part[1:-1] if part.startswith("[") else part
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def text(value: Any) -> str:
    """A primitive as JavaScript would print it; nothing for null, objects and arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, str | int):
        return str(value)
    return ""


# -- matching event names ----------------------------------------------------------------


def event_pattern(key: str, where: str) -> re.Pattern[str] | None:
    """The compiled regex of a `/regex/flags` key, or None for a plain event name."""
    match = _REGEX_KEY.match(key)
    if match is None:
        return None
    pattern, flags = match.groups()
    unknown = set(flags) - set(_REGEX_FLAGS)
    if unknown:
        raise SettingsError(f"{where}: key {key!r} has unknown regex flag(s) {''.join(sorted(unknown))}")
    try:
        return re.compile(pattern, sum(_REGEX_FLAGS[flag] for flag in set(flags)))
    except re.error as exc:
        raise SettingsError(f"{where}: key {key!r} is not a valid regex: {exc}") from None


def first_match(mapping: Mapping[str, str], event_name: str) -> str | None:
    """The value for the exact event name, else for the first `/regex/` key that matches it."""
    if event_name in mapping:
        return mapping[event_name]
    for key, value in mapping.items():
        pattern = event_pattern(key, "slack")
        if pattern is not None and pattern.search(event_name):
            return value
    return None


# -- who the message is about ------------------------------------------------------------


def identify_traits(event: Event) -> dict[str, Any]:
    return {**_mapping(_mapping(event.get("context")).get("traits")), **_mapping(event.get("traits"))}


def display_name(event: Event, traits: Mapping[str, Any]) -> str:
    """Segment's `name`: the first of name, first + last name, username, emails, ids."""
    full_name = " ".join(
        part for part in (text(traits.get("firstName")), text(traits.get("lastName"))) if part
    )
    candidates = (
        text(traits.get("name")),
        full_name,
        text(traits.get("username")),
        text(_mapping(event.get("properties")).get("email")),
        text(traits.get("email")),
    )
    found = next((candidate for candidate in candidates if candidate), None)
    if found:
        return found
    if event.get("userId"):
        return f"User {event['userId']}"
    return f"Anonymous user {event.get('anonymousId') or ''}".rstrip()


def _message(message: str, settings: SlackSettings, channel: str | None) -> Payload:
    if not message.strip():
        raise Skip("the template rendered an empty message")
    body: dict[str, str] = {"text": message}
    extras = {
        "channel": channel,
        "username": settings.username,
        "icon_url": settings.icon_url,
        "icon_emoji": settings.icon_emoji,
    }
    body.update({key: value for key, value in extras.items() if value})
    return Payload("webhook", body)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


destination = Slack()
