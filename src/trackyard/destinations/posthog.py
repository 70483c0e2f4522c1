"""PostHog: every call captured through the `/batch/` endpoint with the project API key.

Wire contract and Segment's mappings: destinations-analytics.md §4. The mapping follows
the classic Segment destination (PostHog's own `posthog-segment`) with RudderStack's
richer context mapping; Segment's Actions variant is not followed where it is wrong
(`receivedAt` as the event time, userId-only distinct ids, an inverted personless flag).

Decisions (the open questions of §4):
* Endpoint: `POST {host}/batch/` `{"api_key", "historical_migration", "batch": [...]}`.
  No `sent_at`: PostHog would correct clock skew against it, but the stored `timestamp`
  is already corrected, and a `sent_at` baked into a request that is retried an hour
  later would shift every event by that hour.
* `distinct_id` = userId, else anonymousId (an event with neither is skipped).
* `uuid` = the messageId when it is a UUID, else uuid5(MESSAGE_ID_NAMESPACE, messageId):
  PostHog dedupes on it and refuses a batch holding a malformed one.
* track → the event name; page → `$pageview` with `$current_url`/`$pathname`/`$host`/
  `$referrer` taken from the page properties, falling back to `context.page`; screen →
  `$screen` with `$screen_name`; identify → `$identify` with `$set` = traits and
  `$anon_distinct_id` = anonymousId (PostHog merges the anonymous person into the
  user), or a `$set` event for an anonymous identify; group → `$groupidentify` with
  `$group_type` (setting, default Segment's classic "segment_group"), `$group_key`,
  `$group_set`; alias → `$create_alias` with distinct_id = userId and `alias` =
  previousId, the classic and RudderStack direction: PostHog refuses to merge an alias
  that is already an identified person, and previousId is the one that is usually not.
* Context → PostHog's standard properties (`$ip`, `$raw_user_agent`, `$os`, `$app_*`,
  `$device_*`, `$screen_*`, `utm_*`...); `$lib`/`$lib_version` name the SDK that
  recorded the event (context.library), not trackyard. `context.groupId` joins the
  event to its group through `$groups`; `context.traits` is sent as `$set`.
* Without `context.ip` the event carries `$geoip_disable: true`, or PostHog would
  geolocate the trackyard server that posts it.
* Anonymous events (no userId) get `$process_person_profile: false` when the
  "person profiles for anonymous users" setting is off; an anonymous identify is then
  skipped, since it would create exactly the profile the setting declines.
* An event over 900 KiB (the official SDK's cap; PostHog refuses ~1 MB) is skipped,
  since one oversized event makes PostHog refuse the whole batch.
* PostHog's capture answers 400 (invalid payload) and 401 (malformed key) for the
  whole request with a plain-text reason, and does not name the bad event: those give
  up; 408/429/5xx are retried, honouring Retry-After. Capture is not rate limited.
"""

from __future__ import annotations

import uuid
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

HOSTS = {"us": "https://us.i.posthog.com", "eu": "https://eu.i.posthog.com"}
# PostHog's app hosts do not take events; the official SDK sends them to ingestion.
_APP_HOSTS = {
    "https://app.posthog.com": HOSTS["us"],
    "https://us.posthog.com": HOSTS["us"],
    "https://eu.posthog.com": HOSTS["eu"],
}
# Fixed for good: a new namespace would give every replayed event a new uuid, and PostHog a duplicate.
MESSAGE_ID_NAMESPACE = uuid.UUID("76969ca7-893a-445f-9c71-f41105d411b1")
MAX_EVENT_BYTES = 900 * 1024

# PostHog property ← path into the Segment event's context.
_CONTEXT_PROPERTIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("$ip", ("ip",)),
    ("$raw_user_agent", ("userAgent",)),
    ("$lib", ("library", "name")),
    ("$lib_version", ("library", "version")),
    ("$locale", ("locale",)),
    ("$timezone", ("timezone",)),
    ("$os", ("os", "name")),
    ("$os_version", ("os", "version")),
    ("$app_name", ("app", "name")),
    ("$app_version", ("app", "version")),
    ("$app_build", ("app", "build")),
    ("$app_namespace", ("app", "namespace")),
    ("$device_id", ("device", "id")),
    ("$device_manufacturer", ("device", "manufacturer")),
    ("$device_model", ("device", "model")),
    ("$device_name", ("device", "name")),
    ("$screen_width", ("screen", "width")),
    ("$screen_height", ("screen", "height")),
    ("$screen_density", ("screen", "density")),
    ("$network_carrier", ("network", "carrier")),
    ("$network_wifi", ("network", "wifi")),
    ("$network_cellular", ("network", "cellular")),
    ("$current_url", ("page", "url")),
    ("$pathname", ("page", "path")),
    ("$referrer", ("page", "referrer")),
)


@dataclass(frozen=True, kw_only=True)
class PostHogSettings(HTTPSettings):
    api_key: str = setting(
        label="Project API key",
        secret=True,
        help="Project settings → Project API key (starts with phc_); not a personal API key.",
    )
    region: str = setting(
        label="Region",
        default="us",
        choices=tuple(HOSTS),
        help="PostHog Cloud US (us.i.posthog.com) or EU (eu.i.posthog.com).",
    )
    instance_url: str | None = setting(
        label="Self-hosted instance URL",
        default=None,
        help="Your own PostHog, e.g. https://posthog.example.com; replaces the region.",
    )
    group_type: str = setting(
        label="Group type",
        default="segment_group",
        help="PostHog group type of Segment groups (groupId); Segment's PostHog destination uses segment_group.",
    )
    anonymous_person_profiles: bool = setting(
        label="Person profiles for anonymous users",
        default=True,
        help="Off: events without a userId are sent as personless events ($process_person_profile: false).",
    )
    historical_migration: bool = setting(
        label="Historical migration",
        default=False,
        help="Mark requests as a backfill of old data (PostHog routes them around live ingestion).",
    )

    def __post_init__(self) -> None:
        if self.api_key.strip().startswith("phx_"):
            raise SettingsError(
                "posthog: setting 'api_key' is a personal API key (phx_), which capture refuses; "
                "use the project API key (phc_) from Project settings"
            )


class PostHog(Destination[PostHogSettings]):
    slug = "posthog"
    name = "PostHog"
    category = Category.ANALYTICS
    description = "Product analytics: events, pageviews, persons and groups in PostHog."
    Settings = PostHogSettings
    batching = Batching(max_events=100, max_bytes=5 * 1024 * 1024, max_wait=1.0)
    default_rate_limit = 0.0
    dedupe_field = "uuid"

    def track(self, event: Event, settings: PostHogSettings) -> Payload:
        properties = {**_person(event, settings), **_properties(event)}
        return self._capture(event, settings, event["event"], properties)

    def page(self, event: Event, settings: PostHogSettings) -> Payload:
        properties = {**_person(event, settings), **_page_properties(event)}
        return self._capture(event, settings, "$pageview", properties)

    def screen(self, event: Event, settings: PostHogSettings) -> Payload:
        properties = {**_person(event, settings), **_properties(event)}
        screen_name = event.get("name") or properties.get("name")
        if screen_name:
            properties["$screen_name"] = screen_name
        return self._capture(event, settings, "$screen", properties)

    def identify(self, event: Event, settings: PostHogSettings) -> Payload:
        traits = event.get("traits") or {}
        user_id, anonymous_id = event.get("userId"), event.get("anonymousId")
        if not user_id:
            if not settings.anonymous_person_profiles:
                raise Skip("anonymous identify: person profiles for anonymous users are off")
            return self._capture(event, settings, "$set", {"$set": traits})
        properties: dict[str, Any] = {"$set": traits}
        if anonymous_id and anonymous_id != user_id:
            properties["$anon_distinct_id"] = anonymous_id
        return self._capture(event, settings, "$identify", properties)

    def group(self, event: Event, settings: PostHogSettings) -> Payload:
        properties = {
            "$group_type": settings.group_type,
            "$group_key": event["groupId"],
            "$group_set": event.get("traits") or {},
        }
        return self._capture(event, settings, "$groupidentify", properties)

    def alias(self, event: Event, settings: PostHogSettings) -> Payload:
        if not event.get("userId") or not event.get("previousId"):
            raise Skip("alias needs both userId and previousId")
        return self._capture(event, settings, "$create_alias", {"alias": event["previousId"]})

    def _capture(self, event: Event, settings: PostHogSettings, name: str, own: dict[str, Any]) -> Payload:
        distinct_id = event.get("userId") or event.get("anonymousId")
        if not distinct_id:
            raise Skip("PostHog needs a distinct_id: the event has neither userId nor anonymousId")
        body = {
            "event": name,
            "distinct_id": distinct_id,
            "properties": {**_context_properties(event, settings), **own},
            "timestamp": event["timestamp"],
            "uuid": event_uuid(event["messageId"]),
        }
        size = len(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS))
        if size > MAX_EVENT_BYTES:
            raise Skip(f"event is {size} bytes; PostHog takes at most {MAX_EVENT_BYTES}")
        return Payload("batch", body)

    def request(self, endpoint: str, bodies: list[Any], settings: PostHogSettings) -> Request:
        envelope = {
            "api_key": settings.api_key.strip(),
            "historical_migration": settings.historical_migration,
            "batch": bodies,
        }
        return Request.json(f"{ingestion_host(settings)}/batch/", envelope)


def ingestion_host(settings: PostHogSettings) -> str:
    """base_url, else the self-hosted instance, else the region's PostHog Cloud host."""
    if settings.instance_url:
        instance = settings.instance_url.rstrip("/")
        return base_url(settings, _APP_HOSTS.get(instance, instance))
    return base_url(settings, HOSTS[settings.region])


def event_uuid(message_id: str) -> str:
    """The messageId when it is a UUID, else a UUID derived from it: stable across retries."""
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, message_id))


def _properties(event: Event) -> dict[str, Any]:
    return dict(event.get("properties") or {})


def _page_properties(event: Event) -> dict[str, Any]:
    """The page's own url/path/referrer win over context.page, which may describe another page."""
    properties = _properties(event)
    if event.get("name") and "name" not in properties:
        properties["name"] = event["name"]
    page = (event.get("context") or {}).get("page") or {}
    for posthog_key, key in (("$current_url", "url"), ("$pathname", "path"), ("$referrer", "referrer")):
        value = properties.get(key) or page.get(key)
        if value:
            properties[posthog_key] = value
    if "$current_url" in properties:
        properties["$host"] = urlsplit(properties["$current_url"]).netloc
    return properties


def _person(event: Event, settings: PostHogSettings) -> dict[str, Any]:
    """How an ordinary event touches its person: `$set` from context.traits, or no person at all."""
    if not event.get("userId") and not settings.anonymous_person_profiles:
        return {"$process_person_profile": False}
    traits = (event.get("context") or {}).get("traits")
    return {"$set": traits} if traits else {}


def _context_properties(event: Event, settings: PostHogSettings) -> dict[str, Any]:
    context = event.get("context") or {}
    properties: dict[str, Any] = {}
    for posthog_key, path in _CONTEXT_PROPERTIES:
        value = _lookup(context, path)
        if value is not None and value != "":
            properties[posthog_key] = value
    if "$current_url" in properties:
        properties["$host"] = urlsplit(properties["$current_url"]).netloc
    for key, value in (context.get("campaign") or {}).items():
        properties[_utm_name(key)] = value
    if context.get("groupId"):
        properties["$groups"] = {settings.group_type: context["groupId"]}
    if "$ip" not in properties:
        properties["$geoip_disable"] = True
    return properties


def _utm_name(campaign_key: str) -> str:
    """context.campaign keys back to the utm_* parameters analytics.js read them from."""
    if campaign_key == "name":
        return "utm_campaign"
    return campaign_key if campaign_key.startswith("utm_") else f"utm_{campaign_key}"


def _lookup(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


destination = PostHog()
