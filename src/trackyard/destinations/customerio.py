"""Customer.io: people, events, page and screen views, objects and merges via the Track API v2.

Decisions (destinations-marketing.md §1, appendix A.1, appendix B):
* API generation: v2 `POST /api/v2/batch` `{"batch": [...]}`, which is what Segment's
  Customer.io (Actions) destination sends for every call, rather than v1's one request per
  call. Batching follows the vendor's limits: at most 500 KB per request and 32 KB per
  item (an item over 32 KB is skipped with a reason rather than poisoning its batch), and
  at most 100 items, Segment's largest batch size. v2 has no ids in URL paths, so no
  path encoding is needed; ids travel in JSON `identifiers`.
* Identifiers, as Segment's `resolveIdentifiers`: a person id starting `cio_` becomes
  `{"cio_id": rest}`, one that looks like an email `{"email"}`, any other `{"id"}`;
  without a userId, events use `{"anonymous_id"}`. When the anonymousId is not the
  identifier it rides along as `attributes.anonymous_id` (it lets Customer.io merge the
  person's anonymous activity).
* identify → person `identify`: identified by userId, else `traits.email` (skipped
  without either: v2 cannot identify a person by anonymous id alone). Attributes are the
  traits (`email` included) without Segment's control keys (`createdAt`/`created_at`
  become unix-seconds `created_at`; `objectTypeId`/`object_type_id`,
  `relationshipAttributes` are dropped); `traits.objectId` relates the person to that object (type
  `traits.objectTypeId`, default "1") with `traits.relationshipAttributes`.
* track → person `event` (name, `id`, attributes ← properties); page → person `page`
  named by `properties.url` (else `context.page.url`); screen → person `screen` named by
  the screen name. `Application Installed` / `Application Opened` with a
  `context.device.token` also upsert the device (`add_device`), as Segment's preset does.
  Other lifecycle names (`User Deleted`…) are sent as ordinary events: deletion belongs to
  trackyard's regulations, not to an event name.
* Event ids: Customer.io deduplicates by `id` but only accepts a ULID, so the id is a ULID
  made from the SHA-256 of the messageId (stable across retries and client resends of the
  same messageId); a messageId that already is a ULID passes unchanged.
* group → object `identify` (object type `traits.objectTypeId`/`object_type_id`, default
  "1"; object id = groupId) related to the user (`identify_anonymous` related to the
  anonymousId when there is no userId). Attributes: `traits.objectAttributes` when given,
  as Segment's default mapping reads them; otherwise the group traits themselves (minus
  the control keys), because the Spec puts a group's attributes there and Segment's
  default would send none. A group's `createdAt` becomes `attributes.created_at`.
* alias → person `merge` (primary ← userId, secondary ← previousId; Customer.io deletes
  the secondary person). Segment offers this mapping but does not enable it by default;
  it is on here and can be switched off with `merge_on_alias`.
* Timestamps are unix seconds: `timestamp` and `created_at` always; every ISO-8601 string
  inside attributes too, as Segment's `convert_timestamp` (on by default, recursing into
  objects but not arrays; date-only and zone-less values are read as UTC).
* Responses: 200 delivered; 207 delivers all but the items named in `errors[].batch_index`,
  which give up; a 400 naming items gives those up and retries the rest; other 4xx give
  up; 408/429 (with Retry-After) and 5xx are retried. Rate limit: 100 requests/s
  (Customer.io's fair-use figure; sources disagree, appendix C.2).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from trackyard.destinations.base import (
    Batching,
    Category,
    Destination,
    Event,
    HTTPSettings,
    Outcome,
    Payload,
    Request,
    Response,
    Skip,
    base_url,
    classify_status,
    setting,
)
from trackyard.spec.timestamps import parse_ms

REGION_HOSTS = {"us": "https://track.customer.io", "eu": "https://track-eu.customer.io"}
BATCH_PATH = "/api/v2/batch"
MAX_REQUEST_BYTES = 500_000
MAX_ITEM_BYTES = 32_000
# The batching policy counts each body plus one separator; the envelope adds the rest.
_ENVELOPE_BYTES = len(b'{"batch":[]}')

DEVICE_EVENTS = frozenset({"Application Installed", "Application Opened"})
_PERSON_CONTROL_TRAITS = frozenset(
    {"createdAt", "created_at", "objectTypeId", "object_type_id", "relationshipAttributes"}
)
_OBJECT_CONTROL_TRAITS = _PERSON_CONTROL_TRAITS | {"objectAttributes"}

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Segment's isIsoDate: the strings its convert_timestamp turns into unix seconds.
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}((T\d{2}:\d{2}(:\d{2})?)(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?)?$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


@dataclass(frozen=True, kw_only=True)
class CustomerIOSettings(HTTPSettings):
    site_id: str = setting(
        label="Site ID", secret=True, help="Customer.io → Settings → API Credentials → Track API keys."
    )
    api_key: str = setting(label="Track API key", secret=True, help="The API key paired with the Site ID.")
    region: str = setting(
        label="Account region",
        default="us",
        choices=("us", "eu"),
        help="The data center of your workspace (Account settings → Privacy).",
    )
    convert_timestamps: bool = setting(
        label="Convert timestamps",
        default=True,
        help="Send ISO-8601 dates found in traits and properties as unix seconds.",
    )
    merge_on_alias: bool = setting(
        label="Merge people on alias",
        default=True,
        help="alias calls merge the previous person into the user (Customer.io deletes the previous one).",
    )


class CustomerIO(Destination[CustomerIOSettings]):
    slug = "customerio"
    name = "Customer.io"
    category = Category.EMAIL
    description = "Send people, events, page and screen views, objects and merges to Customer.io."
    Settings = CustomerIOSettings
    batching = Batching(max_events=100, max_bytes=MAX_REQUEST_BYTES - _ENVELOPE_BYTES, max_wait=1.0)
    default_rate_limit = 100.0
    dedupe_field = "id"

    def identify(self, event: Event, settings: CustomerIOSettings) -> Payload:
        traits = _mapping(event.get("traits"))
        person = event.get("userId") or traits.get("email")
        if not person:
            raise Skip("Customer.io identifies people by userId or traits.email; this identify has neither")
        attributes = {key: value for key, value in traits.items() if key not in _PERSON_CONTROL_TRAITS}
        created_at = _unix_seconds(traits.get("created_at") or traits.get("createdAt"))
        if created_at is not None:
            attributes["created_at"] = created_at
        identifiers = person_identifiers(str(person))
        item: dict[str, Any] = {
            "type": "person",
            "action": "identify",
            "identifiers": identifiers,
            "attributes": _with_anonymous_id(_converted(attributes, settings), event, identifiers),
        }
        _put_timestamp(item, event)
        if traits.get("objectId"):
            item["cio_relationships"] = [_object_relationship(traits, settings)]
        return _item(item)

    def track(self, event: Event, settings: CustomerIOSettings) -> list[Payload]:
        name = event.get("event")
        if not name:
            raise Skip("track has no event name")
        payloads = [_person_action(event, settings, "event", str(name))]
        device = _device_item(event, settings) if name in DEVICE_EVENTS else None
        if device is not None:
            payloads.append(device)
        return payloads

    def page(self, event: Event, settings: CustomerIOSettings) -> Payload:
        url = _mapping(event.get("properties")).get("url") or _mapping(
            _mapping(event.get("context")).get("page")
        ).get("url")
        if not url:
            raise Skip("Customer.io names page views by URL; this page has no properties.url")
        return _person_action(event, settings, "page", str(url))

    def screen(self, event: Event, settings: CustomerIOSettings) -> Payload:
        name = event.get("name") or _mapping(event.get("properties")).get("name")
        if not name:
            raise Skip("Customer.io names screen views; this screen has no name")
        return _person_action(event, settings, "screen", str(name))

    def group(self, event: Event, settings: CustomerIOSettings) -> Payload:
        group_id = event.get("groupId")
        if not group_id:
            raise Skip("group has no groupId")
        traits = _mapping(event.get("traits"))
        attributes = (
            _mapping(traits["objectAttributes"])
            if "objectAttributes" in traits
            else {key: value for key, value in traits.items() if key not in _OBJECT_CONTROL_TRAITS}
        )
        created_at = _unix_seconds(traits.get("created_at") or traits.get("createdAt"))
        if created_at is not None:
            attributes = {**attributes, "created_at": created_at}
        if event.get("userId"):
            action, related = "identify", person_identifiers(str(event["userId"]))
        elif event.get("anonymousId"):
            action, related = "identify_anonymous", {"anonymous_id": str(event["anonymousId"])}
        else:
            raise Skip("group has neither userId nor anonymousId to relate the object to")
        relationship: dict[str, Any] = {"identifiers": related}
        if _mapping(traits.get("relationshipAttributes")):
            relationship["relationship_attributes"] = _converted(traits["relationshipAttributes"], settings)
        return _item(
            {
                "type": "object",
                "action": action,
                "identifiers": {"object_type_id": _object_type(traits), "object_id": str(group_id)},
                "attributes": _converted(attributes, settings),
                "cio_relationships": [relationship],
            }
        )

    def alias(self, event: Event, settings: CustomerIOSettings) -> Payload:
        if not settings.merge_on_alias:
            raise Skip("merging people on alias is switched off (merge_on_alias)")
        primary, secondary = event.get("userId"), event.get("previousId")
        if not primary or not secondary:
            raise Skip("alias needs both userId and previousId to merge people")
        return _item(
            {
                "type": "person",
                "action": "merge",
                "primary": person_identifiers(str(primary)),
                "secondary": person_identifiers(str(secondary)),
            }
        )

    def request(self, endpoint: str, bodies: list[Any], settings: CustomerIOSettings) -> Request:
        url = base_url(settings, REGION_HOSTS[settings.region]) + BATCH_PATH
        return Request.json(url, {"batch": bodies}, {"Authorization": basic_auth(settings)})

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        failed = _failed_items(response, count)
        if response.status == 207 or (response.status == 400 and failed):
            others = (
                Outcome.delivered(f"HTTP {response.status}")
                if response.status == 207
                else Outcome.retry("HTTP 400: rejected with the batch because of other items")
            )
            return [
                Outcome.give_up(f"HTTP {response.status}: {failed[index]}") if index in failed else others
                for index in range(count)
            ]
        return classify_status(response)


def basic_auth(settings: CustomerIOSettings) -> str:
    token = base64.b64encode(f"{settings.site_id}:{settings.api_key}".encode()).decode()
    return f"Basic {token}"


def person_identifiers(person: str) -> dict[str, str]:
    """Segment's resolution of a person id: `cio_…` → cio_id, an email → email, else id."""
    if person.startswith("cio_"):
        return {"cio_id": person[4:]}
    if _EMAIL.match(person):
        return {"email": person}
    return {"id": person}


def event_ulid(message_id: str) -> str:
    """A ULID for Customer.io's dedupe `id`: the messageId itself when it is one, else its hash."""
    if _ULID.match(message_id.upper()):
        return message_id.upper()
    number = int.from_bytes(hashlib.sha256(message_id.encode()).digest()[:16], "big")
    return "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))


def _person_action(event: Event, settings: CustomerIOSettings, action: str, name: str) -> Payload:
    identifiers = _event_identifiers(event)
    properties = _converted(_mapping(event.get("properties")), settings)
    item: dict[str, Any] = {
        "type": "person",
        "action": action,
        "identifiers": identifiers,
        "name": name,
        "attributes": _with_anonymous_id(properties, event, identifiers),
    }
    if event.get("messageId"):
        item["id"] = event_ulid(str(event["messageId"]))
    _put_timestamp(item, event)
    return _item(item)


def _device_item(event: Event, settings: CustomerIOSettings) -> Payload | None:
    context = _mapping(event.get("context"))
    device = _mapping(context.get("device"))
    if not device.get("token"):
        return None
    attributes = _converted(_mapping(event.get("properties")), settings)
    app_version = _mapping(context.get("app")).get("version")
    if app_version:
        attributes["app_version"] = app_version
    fields: dict[str, Any] = {"token": device["token"], "attributes": attributes}
    if device.get("type"):
        fields["platform"] = device["type"]
    last_used = _unix_seconds(event.get("timestamp"))
    if last_used is not None:
        fields["last_used"] = last_used
    return _item(
        {"type": "person", "action": "add_device", "identifiers": _event_identifiers(event), "device": fields}
    )


def _event_identifiers(event: Event) -> dict[str, str]:
    if event.get("userId"):
        return person_identifiers(str(event["userId"]))
    if event.get("anonymousId"):
        return {"anonymous_id": str(event["anonymousId"])}
    raise Skip(f"{event.get('type')} has neither userId nor anonymousId")


def _with_anonymous_id(
    attributes: dict[str, Any], event: Event, identifiers: dict[str, str]
) -> dict[str, Any]:
    """The anonymousId as an attribute when it is not the identifier, so Customer.io can merge it."""
    if event.get("anonymousId") and "anonymous_id" not in identifiers:
        return {**attributes, "anonymous_id": event["anonymousId"]}
    return attributes


def _object_relationship(traits: dict[str, Any], settings: CustomerIOSettings) -> dict[str, Any]:
    relationship: dict[str, Any] = {
        "identifiers": {"object_type_id": _object_type(traits), "object_id": str(traits["objectId"])}
    }
    if _mapping(traits.get("relationshipAttributes")):
        relationship["relationship_attributes"] = _converted(traits["relationshipAttributes"], settings)
    return relationship


def _object_type(traits: dict[str, Any]) -> str:
    return str(traits.get("object_type_id") or traits.get("objectTypeId") or "1")


def _put_timestamp(item: dict[str, Any], event: Event) -> None:
    seconds = _unix_seconds(event.get("timestamp"))
    if seconds is not None:
        item["timestamp"] = seconds


def _unix_seconds(value: Any) -> int | None:
    """Unix seconds for an ISO-8601 string (floored, as Segment's dayjs `.unix()`); numbers pass."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    ms = parse_ms(value)
    return None if ms is None else ms // 1000


def _converted(attributes: dict[str, Any], settings: CustomerIOSettings) -> dict[str, Any]:
    return _convert_dates(attributes) if settings.convert_timestamps else dict(attributes)


def _convert_dates(attributes: dict[str, Any]) -> dict[str, Any]:
    """Every ISO-8601 string → unix seconds, recursing into objects (not arrays), like Segment."""
    converted: dict[str, Any] = {}
    for key, value in attributes.items():
        if (
            isinstance(value, str)
            and _ISO_DATE.match(value)
            and (seconds := _unix_seconds(value)) is not None
        ):
            converted[key] = seconds
        elif isinstance(value, dict):
            converted[key] = _convert_dates(value)
        else:
            converted[key] = value
    return converted


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _item(item: dict[str, Any]) -> Payload:
    size = len(orjson.dumps(item))
    if size > MAX_ITEM_BYTES:
        raise Skip(f"the {item['action']} item is {size} bytes; Customer.io takes at most {MAX_ITEM_BYTES}")
    return Payload("batch", item)


def _failed_items(response: Response, count: int) -> dict[int, str]:
    """The items a batch response names in `errors[].batch_index`, with the vendor's words."""
    body = response.json()
    errors = body.get("errors") if isinstance(body, dict) else None
    failed: dict[int, str] = {}
    for error in errors if isinstance(errors, list) else []:
        index = error.get("batch_index") if isinstance(error, dict) else None
        if isinstance(index, int) and 0 <= index < count:
            words = [f"{key}: {error[key]}" for key in ("reason", "field", "message") if error.get(key)]
            failed[index] = ", ".join(words) or "rejected by Customer.io"
    return failed


destination = CustomerIO()
