"""The destination SDK: what a destination module declares, and nothing more.

A destination is data plus pure functions (STYLE.md, "Declarative destinations"):

* catalog metadata: `slug`, `name` (Segment's catalog name, the key of the `integrations`
  object), `category`, `description`;
* `Settings`: a kw-only dataclass whose fields are declared with `setting(...)`; the UI
  renders it as a form, the API and the CLI validate against it, secrets are redacted;
* a translation per call type (`track`, `identify`, `page`, `screen`, `group`, `alias`)
  from a normalised Segment event to zero or more `Payload`s, each addressed to an
  endpoint of the tool;
* `request(endpoint, bodies, settings)`: one HTTP `Request` for a batch of payload
  bodies bound for the same endpoint, cut by the `batching` policy;
* `classify(response, request, count)`: *delivered / retry / give up*, either for the
  whole request or per payload (partial failures inside a batch response).

HTTP, batching, retries, rate limits, concurrency and the record of attempts belong to
the delivery engine. Nothing here performs I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlencode

import orjson

Event = dict[str, Any]
CALL_TYPES = ("track", "identify", "page", "screen", "group", "alias")


class Category(enum.StrEnum):
    ANALYTICS = "analytics"
    ADVERTISING = "advertising"
    EMAIL = "email"
    MARKETING_AUTOMATION = "marketing automation"
    CRM = "crm"
    SUPPORT = "customer support"
    STORAGE = "storage"
    CUSTOM = "custom"


# -- settings ----------------------------------------------------------------------------


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it and says what is expected."""


def setting(
    *,
    label: str,
    help: str = "",
    default: Any = dataclasses.MISSING,
    secret: bool = False,
    choices: Sequence[str] = (),
    advanced: bool = False,
) -> Any:
    """Declare a settings field. Without a default the setting is required."""
    metadata = {
        "label": label,
        "help": help,
        "secret": secret,
        "choices": tuple(choices),
        "advanced": advanced,
    }
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class DestinationSettings:
    """Base of every destination's settings; the delivery knobs apply to all destinations."""

    concurrency: int = setting(
        label="Concurrent requests", default=4, advanced=True, help="Requests in flight to this tool at once."
    )
    rate_limit: float = setting(
        label="Rate limit (requests/s)", default=0.0, advanced=True, help="0 means the tool's default."
    )
    timeout: float = setting(label="Request timeout (s)", default=10.0, advanced=True)
    partitions: int = setting(
        label="Partitions",
        default=1,
        advanced=True,
        help="Parallel consumers, spread over worker processes; one user's events stay in order within one.",
    )


@dataclass(frozen=True, kw_only=True)
class HTTPSettings(DestinationSettings):
    base_url: str | None = setting(
        label="Base URL",
        default=None,
        advanced=True,
        help="Replaces the tool's API base URL (EU data residency, proxies, tests).",
    )


@dataclass(frozen=True)
class SettingSpec:
    """One field of a settings schema, as the catalog, the UI form and the API show it."""

    name: str
    label: str
    type: str  # string, secret, boolean, integer, number, choice, mapping, list
    required: bool
    default: Any
    help: str
    secret: bool
    choices: tuple[str, ...]
    advanced: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


S = TypeVar("S", bound=DestinationSettings)


def settings_schema(cls: type[DestinationSettings]) -> list[SettingSpec]:
    hints = typing.get_type_hints(cls)
    specs = []
    for field in dataclasses.fields(cls):
        meta = field.metadata
        kind = _kind_of(hints[field.name], meta)
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        default = None
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        specs.append(
            SettingSpec(
                name=field.name,
                label=meta.get("label", field.name),
                type=kind,
                required=required,
                default=default,
                help=meta.get("help", ""),
                secret=bool(meta.get("secret")),
                choices=tuple(meta.get("choices", ())),
                advanced=bool(meta.get("advanced")),
            )
        )
    # the destination's own settings first, the shared delivery knobs last
    return sorted(specs, key=lambda spec: spec.advanced)


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return members[0] if len(members) == 1 else str
    return annotation


def _kind_of(annotation: Any, meta: Mapping[str, Any]) -> str:
    if meta.get("secret"):
        return "secret"
    if meta.get("choices"):
        return "choice"
    base = _base_type(annotation)
    origin = typing.get_origin(base) or base
    return {bool: "boolean", int: "integer", float: "number", dict: "mapping", list: "list"}.get(
        origin, "string"
    )


def parse_settings(cls: type[S], raw: Mapping[str, Any], destination: str = "destination") -> S:
    """Build typed settings from user input (strings from the CLI or JSON from the API).

    Raises SettingsError naming the setting, the value and what is expected.
    """
    specs = {spec.name: spec for spec in settings_schema(cls)}
    unknown = sorted(set(raw) - set(specs))
    if unknown:
        raise SettingsError(
            f"{destination}: unknown setting {unknown[0]!r}; expected one of: {', '.join(sorted(specs))}"
        )
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        value = raw.get(name)
        if value is None or value == "":
            if spec.required:
                raise SettingsError(f"{destination}: setting {name!r} ({spec.label}) is required")
            continue
        values[name] = _coerce(spec, value, destination)
    return cls(**values)


def _coerce(spec: SettingSpec, value: Any, destination: str) -> Any:
    where = f"{destination}: setting {spec.name!r}"
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise SettingsError(f"{where} must be true or false; got {value!r}")
    if spec.type in ("integer", "number"):
        try:
            number = int(value) if spec.type == "integer" else float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where} must be a {spec.type}; got {value!r}") from None
        if isinstance(value, bool) or number < 0:
            raise SettingsError(f"{where} must be a non-negative {spec.type}; got {value!r}")
        return number
    if spec.type == "choice":
        if value not in spec.choices:
            raise SettingsError(f"{where} must be one of {', '.join(spec.choices)}; got {value!r}")
        return value
    if spec.type == "mapping":
        return _mapping(value, where)
    if spec.type == "list":
        if isinstance(value, list):
            return [str(item) for item in value]
        return [part.strip() for part in str(value).split(",") if part.strip()]
    if not isinstance(value, str):
        raise SettingsError(f"{where} must be a string; got {type(value).__name__}")
    if spec.name.endswith("url") and not value.startswith(("http://", "https://")):
        raise SettingsError(f"{where} must be an http:// or https:// URL; got {value!r}")
    return value


def _mapping(value: Any, where: str) -> dict[str, str]:
    """A mapping from JSON (`{"X-Key": "v"}`) or from `Name: value` pairs separated by newlines or ';'."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise SettingsError(f"{where} is not valid JSON: {exc}") from None
        else:
            pairs = [part for part in text.replace(";", "\n").splitlines() if part.strip()]
            if not all(":" in pair for pair in pairs):
                raise SettingsError(f"{where} must be JSON or 'Name: value' pairs; got {value!r}")
            value = {k.strip(): v.strip() for k, v in (pair.split(":", 1) for pair in pairs)}
    if not isinstance(value, dict) or not all(isinstance(v, str | int | float) for v in value.values()):
        raise SettingsError(f"{where} must map names to strings")
    return {str(k): str(v) for k, v in value.items()}


def settings_to_json(settings: DestinationSettings) -> dict[str, Any]:
    """Every setting as stored (secrets included): for the store only, never for display."""
    return dataclasses.asdict(settings)


def redacted(settings: DestinationSettings) -> dict[str, Any]:
    """Settings safe to print or return: a secret becomes {"set": bool}, its value never leaves."""
    shown: dict[str, Any] = {}
    for spec in settings_schema(type(settings)):
        value = getattr(settings, spec.name)
        shown[spec.name] = {"set": bool(value)} if spec.secret else value
    return shown


def secret_values(settings: DestinationSettings) -> list[str]:
    """The secret strings of these settings, so logs and excerpts can be scrubbed of them."""
    return [
        str(getattr(settings, spec.name))
        for spec in settings_schema(type(settings))
        if spec.secret and getattr(settings, spec.name)
    ]


# -- translation -------------------------------------------------------------------------


class Skip(Exception):
    """The destination does not take this event (unsupported call, missing identifier...).

    The engine counts it as filtered and records the reason; it is never retried.
    """


@dataclass(frozen=True, slots=True)
class Payload:
    """One event's contribution to one endpoint of the tool; `body` is JSON-serialisable."""

    endpoint: str
    body: Any


@dataclass(frozen=True, slots=True)
class Batching:
    """How many payloads of one endpoint may share a request, and how long to wait for them."""

    max_events: int = 1
    max_bytes: int = 1_000_000
    max_wait: float = 0.5


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @classmethod
    def json(
        cls, url: str, data: Any, headers: Mapping[str, str] | None = None, method: str = "POST"
    ) -> Request:
        return cls(
            method,
            url,
            (("Content-Type", "application/json"), *(headers or {}).items()),
            orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        )

    @classmethod
    def form(cls, url: str, fields: Mapping[str, str], headers: Mapping[str, str] | None = None) -> Request:
        return cls(
            "POST",
            url,
            (("Content-Type", "application/x-www-form-urlencoded"), *(headers or {}).items()),
            urlencode(fields).encode(),
        )

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str = ""
    retry_after: float | None = None  # seconds, when the tool said how long to wait

    @classmethod
    def delivered(cls, reason: str = "") -> Outcome:
        return cls(Verdict.DELIVERED, reason)

    @classmethod
    def retry(cls, reason: str, retry_after: float | None = None) -> Outcome:
        return cls(Verdict.RETRY, reason, retry_after)

    @classmethod
    def give_up(cls, reason: str) -> Outcome:
        return cls(Verdict.GIVE_UP, reason)


RETRYABLE_STATUSES = frozenset({408, 423, 429})
EPOCH_THRESHOLD_S = 1_000_000_000


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from `Retry-After` (delta or HTTP date) or `X-RateLimit-Reset` (delta or epoch seconds)."""
    value = headers.get("retry-after") or headers.get("x-ratelimit-reset")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    if seconds > EPOCH_THRESHOLD_S:  # some tools (Braze) send the reset moment as epoch seconds
        seconds -= time.time()
    return max(0.0, seconds)


def classify_status(response: Response) -> Outcome:
    """Segment's rule: 2xx delivered; 408, 423, 429 and 5xx retried; any other status given up."""
    status = response.status
    excerpt = response.text[:200]
    if 200 <= status < 300:
        return Outcome.delivered(f"HTTP {status}")
    if status in RETRYABLE_STATUSES or status >= 500:
        return Outcome.retry(f"HTTP {status}: {excerpt}", retry_after_seconds(response.headers))
    return Outcome.give_up(f"HTTP {status}: {excerpt}")


# -- the destination ---------------------------------------------------------------------


class Destination(Generic[S]):
    """Subclass per tool; override the call types the tool takes."""

    slug: ClassVar[str]
    name: ClassVar[str]
    category: ClassVar[Category]
    description: ClassVar[str]
    Settings: ClassVar[type[DestinationSettings]]
    batching: ClassVar[Batching] = Batching()
    default_rate_limit: ClassVar[float] = 0.0  # requests/s, 0 = unlimited
    opt_in: ClassVar[bool] = False  # True: not enabled by integrations.All (Salesforce)
    aliases: ClassVar[tuple[str, ...]] = ()  # other integrations keys users write for this tool
    dedupe_field: ClassVar[str] = ""  # where the messageId travels, for the record (e.g. "$insert_id")

    def translate(self, event: Event, settings: S) -> list[Payload]:
        handler = getattr(self, event.get("type", ""), None)
        if event.get("type") not in CALL_TYPES or handler is None:
            raise Skip(f"{self.name} does not take {event.get('type')} calls")
        result = handler(event, settings)
        return [result] if isinstance(result, Payload) else list(result)

    def batching_policy(self, settings: S) -> Batching:
        """The batching policy; override when a setting (such as a batch size) changes it."""
        return self.batching

    def request(self, endpoint: str, bodies: list[Any], settings: S) -> Request:
        raise NotImplementedError(f"{type(self).__name__} must build requests for endpoint {endpoint!r}")

    def classify(self, response: Response, request: Request, count: int) -> Outcome | list[Outcome]:
        """The whole request's outcome, or one outcome per payload (same order as the bodies)."""
        return classify_status(response)

    @classmethod
    def catalog_entry(cls) -> dict[str, Any]:
        return {
            "slug": cls.slug,
            "name": cls.name,
            "category": str(cls.category),
            "description": cls.description,
            "settings": [spec.to_json() for spec in settings_schema(cls.Settings)],
        }


def base_url(settings: DestinationSettings, default: str) -> str:
    """The vendor base URL, or the `base_url` override, without a trailing slash."""
    override = getattr(settings, "base_url", None)
    return (override or default).rstrip("/")
