"""Amazon S3: every event archived as gzip JSON-lines files in Segment's S3 layout, on AWS S3
or on any S3-compatible object store (MinIO, Ceph, Cloudflare R2, Backblaze B2...).

Wire contract: destinations-analytics.md §9.1 (Segment's raw-log archive) and S3's
PutObject.

Decisions (the open points of §9 and §13):
* Object key: `[<prefix>/]segment-logs/<source_id>/<received-day>/<file>.gz`.
  - `received-day` is midnight UTC of the day the event was *received* (`receivedAt`),
    in milliseconds since the epoch (`1795824000000` for 2026-11-28): the unit commonly
    reported for Segment's archives, which its docs do not state, so readers should treat
    the folder name as opaque. The day is the payload's endpoint, so the engine never puts two days
    in one file: a batch straddling midnight becomes two files.
  - `file` is `<receivedAt of the file's first event, ms>-<16 hex of the SHA-256 of its
    JSON lines>.gz`: files sort by time inside a day, and the name depends only on the
    content, so a retried PUT overwrites its own object instead of adding a copy, and
    the workers of parallel partitions never overwrite each other's files.
  - `source_id` is a required setting: the engine does not tell a destination which
    source an event came from, and Segment's layout names the source. Use your Segment
    source id to continue an existing archive, or the source's name.
* Content: one full message per line, exactly as stored (context, messageId, receivedAt,
  sentAt...), each line ending in a newline; gzip with mtime 0, so the same events give
  the same bytes. Object metadata `Content-Type: text/plain` and `Content-Encoding: gzip`,
  as Segment writes them; `x-amz-server-side-encryption: AES256` when the setting asks.
* Transport: one PUT Object per file, signed with AWS Signature V4 by botocore's
  `S3SigV4Auth` (payload signed: `x-amz-content-sha256`), with `Content-MD5` so that S3
  refuses a damaged body. Without `base_url` the AWS endpoint is addressed
  virtual-hosted-style, `https://<bucket>.s3.<region>.amazonaws.com/<key>` (AWS has
  deprecated path-style), except for bucket names with dots, which the TLS wildcard
  certificate does not cover and which therefore go path-style. With `base_url` (an
  S3-compatible server), path-style `<base_url>/<bucket>/<key>`, which they all serve.
* Batching: a file per 10,000 events or 8 MB of JSON, written at the latest 60 s after
  its first event (both settings). Segment writes hourly files of up to 100 MB; smaller
  files arrive sooner and keep the engine's memory, and the gzip of a file (done in one
  piece), small.
* Rate: S3 takes 3,500 PUT requests per second per prefix, the default rate limit.
* Which events: every call type, unchanged; no identifier is needed, so nothing is
  skipped but an event without `receivedAt` (never stored by `trackyard serve`). The
  engine applies the `integrations` object to every destination, so `"Amazon S3": false`
  keeps an event out of this archive, whereas Segment's S3 archive ignores the object;
  trackyard's own archive remains the complete copy.
* Responses: S3 explains an error with XML `<Error><Code>…</Code><Message>…</Message>`.
  Retried: 5xx (InternalError, ServiceUnavailable, SlowDown: honouring Retry-After when
  sent), 408 and 429, and the 4xx codes with which a later attempt can succeed:
  RequestTimeout, RequestTimeTooSkewed (the clock can be fixed within the retry window)
  and OperationAborted ("try again"). Given up, with the code and message in the reason:
  every other 4xx, e.g. AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,
  NoSuchBucket, PermanentRedirect (the reason names the endpoint S3 gives) and
  AuthorizationHeaderMalformed (a wrong region: the reason names the right one). A file
  is stored whole or not at all, so outcomes are per request.
* Duplicates: at-least-once, as everywhere. A retry sends the same file again under the
  same key; after a crash the engine may cut the resent events into other files, which
  then hold copies: readers deduplicate by `messageId` (the `dedupe_field`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import orjson

from trackyard.destinations.base import (
    RETRYABLE_STATUSES,
    Batching,
    Category,
    Destination,
    Event,
    HTTPSettings,
    Outcome,
    Payload,
    Request,
    Response,
    SettingsError,
    Skip,
    classify_status,
    retry_after_seconds,
    setting,
)
from trackyard.spec import parse_ms

DAY_MS = 86_400_000
MAX_FILE_BYTES = 8_000_000
GZIP_LEVEL = 6  # on event JSON, twice as fast as gzip's default 9 (80 ms for 8 MB), files 3 % larger
HASH_HEX_CHARS = 16
RETRYABLE_CODES = frozenset({"RequestTimeout", "RequestTimeTooSkewed", "OperationAborted", "SlowDown"})
ERROR_DETAILS = ("Endpoint", "Region", "BucketName")  # what tells a user how to fix the settings
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION_NAME = re.compile(r"[a-z0-9-]+")


@dataclass(frozen=True, kw_only=True)
class S3Settings(HTTPSettings):
    base_url: str | None = setting(
        label="Endpoint URL",
        default=None,
        help="An S3-compatible server (MinIO, R2, Ceph...), addressed path-style. "
        "Empty: AWS, https://<bucket>.s3.<region>.amazonaws.com.",
    )
    bucket: str = setting(label="Bucket", help="The bucket's name; the bucket must exist.")
    region: str = setting(
        label="Region",
        default="us-east-1",
        help="The bucket's AWS region (part of the signature). S3-compatible servers: the region they "
        "expect, often us-east-1 (MinIO) or auto (R2).",
    )
    access_key_id: str = setting(
        label="Access key ID", help="Of an IAM user (or server account) allowed s3:PutObject on the bucket."
    )
    secret_access_key: str = setting(label="Secret access key", secret=True)
    source_id: str = setting(
        label="Source ID",
        help="The folder under segment-logs/: your Segment source id to continue its archive, "
        "or this source's name.",
    )
    prefix: str = setting(
        label="Path prefix", default="", help="Folders before segment-logs/, e.g. archive/segment."
    )
    server_side_encryption: bool = setting(
        label="Server-side encryption",
        default=False,
        help="Send x-amz-server-side-encryption: AES256 (AWS encrypts new objects by default).",
    )
    batch_events: int = setting(
        label="Events per file", default=10_000, advanced=True, help="A file holds at most this many events."
    )
    batch_wait: float = setting(
        label="Seconds per file",
        default=60.0,
        advanced=True,
        help="A file is written at the latest this long after its first event arrived.",
    )

    def __post_init__(self) -> None:
        if not BUCKET_NAME.fullmatch(self.bucket):
            raise SettingsError(
                f"s3: setting 'bucket' must be 3 to 63 lowercase letters, digits, dots or hyphens; "
                f"got {self.bucket!r}"
            )
        if not REGION_NAME.fullmatch(self.region):
            raise SettingsError(f"s3: setting 'region' must look like eu-west-1; got {self.region!r}")
        if "/" in self.source_id:
            raise SettingsError(
                f"s3: setting 'source_id' is one folder name, without '/'; got {self.source_id!r}"
            )
        if self.batch_events < 1:
            raise SettingsError(f"s3: setting 'batch_events' must be at least 1; got {self.batch_events}")


class AmazonS3(Destination[S3Settings]):
    slug = "s3"
    name = "Amazon S3"
    category = Category.STORAGE
    description = "Archive every event as gzip JSON-lines files in Segment's S3 layout, on S3 or MinIO."
    Settings = S3Settings
    batching = Batching(max_events=10_000, max_bytes=MAX_FILE_BYTES, max_wait=60.0)
    default_rate_limit = 3500.0
    dedupe_field = "messageId"

    def batching_policy(self, settings: S3Settings) -> Batching:
        return Batching(
            max_events=settings.batch_events, max_bytes=MAX_FILE_BYTES, max_wait=settings.batch_wait
        )

    def _archive(self, event: Event, settings: S3Settings) -> Payload:
        received_ms = parse_ms(event.get("receivedAt"))
        if received_ms is None:
            raise Skip("no receivedAt: Segment's S3 layout files an event under the day it was received")
        return Payload(str(received_ms - received_ms % DAY_MS), event)

    track = identify = page = screen = group = alias = _archive

    def request(self, endpoint: str, bodies: list[Any], settings: S3Settings) -> Request:
        lines = json_lines(bodies)
        key = object_key(settings, endpoint, file_name(bodies[0], lines))
        body = gzip.compress(lines, compresslevel=GZIP_LEVEL, mtime=0)
        headers = {
            "Content-Type": "text/plain",
            "Content-Encoding": "gzip",
            "Content-MD5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
        }
        if settings.server_side_encryption:
            headers["x-amz-server-side-encryption"] = "AES256"
        return signed_put(object_url(settings, key), headers, body, settings)

    def classify(self, response: Response, request: Request, count: int) -> Outcome:
        error = s3_error(response.body)
        if 200 <= response.status < 300 or error is None:
            return classify_status(response)
        code = error.get("Code", "")
        details = "; ".join(f"{name}: {error[name]}" for name in ERROR_DETAILS if error.get(name))
        reason = f"HTTP {response.status} {code}: {error.get('Message', '')}" + (
            f" ({details})" if details else ""
        )
        if code in RETRYABLE_CODES or response.status in RETRYABLE_STATUSES or response.status >= 500:
            return Outcome.retry(reason, retry_after_seconds(response.headers))
        return Outcome.give_up(reason)


def json_lines(bodies: list[Any]) -> bytes:
    return b"".join(orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS) + b"\n" for body in bodies)


def file_name(first: Event, lines: bytes) -> str:
    """`<first receivedAt ms>-<content hash>.gz`: sortable, and the same for the same events."""
    digest = hashlib.sha256(lines).hexdigest()[:HASH_HEX_CHARS]
    return f"{parse_ms(first.get('receivedAt'))}-{digest}.gz"


def object_key(settings: S3Settings, day: str, name: str) -> str:
    folders = [settings.prefix.strip("/"), "segment-logs", settings.source_id, day]
    return "/".join(folder for folder in folders if folder) + "/" + name


def object_url(settings: S3Settings, key: str) -> str:
    path = quote(key, safe="/~")
    if settings.base_url:
        return f"{settings.base_url.rstrip('/')}/{settings.bucket}/{path}"
    if "." in settings.bucket:
        return f"https://s3.{settings.region}.amazonaws.com/{settings.bucket}/{path}"
    return f"https://{settings.bucket}.s3.{settings.region}.amazonaws.com/{path}"


def signed_put(url: str, headers: dict[str, str], body: bytes, settings: S3Settings) -> Request:
    """The PUT with botocore's SigV4 headers (X-Amz-Date, X-Amz-Content-SHA256, Authorization)."""
    # imported here: botocore takes ~150 ms to import, which only a process sending to S3 should pay
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    unsigned = AWSRequest(method="PUT", url=url, data=body, headers=headers)
    credentials = Credentials(settings.access_key_id, settings.secret_access_key)
    S3SigV4Auth(credentials, "s3", settings.region).add_auth(unsigned)
    return Request("PUT", url, tuple(unsigned.headers.items()), body)


def s3_error(body: bytes) -> dict[str, str] | None:
    """The fields of S3's `<Error>` document (Code, Message, Endpoint...), or None for another body."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    if _local_name(root.tag) != "Error":
        return None
    return {_local_name(child.tag): (child.text or "").strip() for child in root}


def _local_name(tag: str) -> str:
    """The tag without an XML namespace, which some S3-compatible servers add."""
    return tag.rsplit("}", 1)[-1]


destination = AmazonS3()
