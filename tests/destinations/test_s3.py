"""Amazon S3: the Spec scenario as the exact signed PUT of a gzip JSON-lines file in Segment's
S3 layout, batching into files, settings, and S3's XML errors (destinations-analytics.md §9).

The signature is checked by an independent implementation of AWS Signature V4 written
from AWS's documentation (below), not by asking botocore again; the end-to-end test
(test_s3_e2e.py) has an S3-compatible server check it as well.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests import spec_events
from trackyard.delivery.batching import render
from trackyard.destinations.base import (
    Batching,
    Category,
    Request,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.registry import catalog
from trackyard.destinations.s3 import destination

ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REQUIRED = {
    "bucket": "acme-archive",
    "access_key_id": ACCESS_KEY_ID,
    "secret_access_key": SECRET,
    "source_id": "web-prod",
}
SETTINGS = parse_settings(destination.Settings, REQUIRED)
DAY_2026_11_28 = "1795824000000"  # 2026-11-28T00:00:00Z in ms: the scenario's received day
FIRST_RECEIVED_MS = "1795860005300"  # 2026-11-28T10:00:05.300Z, receivedAt of every scenario event
SIGNED_HEADERS = "content-encoding;content-md5;content-type;host;x-amz-content-sha256;x-amz-date"


def settings(**raw: Any) -> Any:
    return parse_settings(destination.Settings, {**REQUIRED, **raw})


def lines_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(event) + b"\n" for event in events)


def file_name(events: list[dict[str, Any]]) -> str:
    """The documented name: first receivedAt in ms, then 16 hex of the SHA-256 of the lines."""
    first_ms = int(datetime.fromisoformat(events[0]["receivedAt"]).timestamp() * 1000)
    return f"{first_ms}-{hashlib.sha256(lines_of(events)).hexdigest()[:16]}.gz"


def archived(request: Request) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in gzip.decompress(request.body).splitlines()]


def sigv4_signature(request: Request, secret: str, region: str, signed_headers: list[str]) -> str:
    """AWS Signature V4 of an S3 request, from AWS's 'Create a signed AWS API request' steps."""
    amz_date = request.header("X-Amz-Date") or ""
    parts = urlsplit(request.url)
    values = {name.lower(): " ".join(value.split()) for name, value in request.headers}
    values["host"] = parts.netloc
    canonical_request = "\n".join(
        [
            request.method,
            parts.path,
            parts.query,
            *(f"{name}:{values[name]}" for name in signed_headers),
            "",
            ";".join(signed_headers),
            hashlib.sha256(request.body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def expected_headers(
    request: Request, region: str = "us-east-1", extra: tuple[tuple[str, str], ...] = ()
) -> tuple[tuple[str, str], ...]:
    """Every header of a PUT of `request.body`; only X-Amz-Date is taken from the request."""
    amz_date = request.header("X-Amz-Date") or ""
    signed = sorted([*SIGNED_HEADERS.split(";"), *(name.lower() for name, _ in extra)])
    signature = sigv4_signature(request, SECRET, region, signed)
    return (
        ("Content-Type", "text/plain"),
        ("Content-Encoding", "gzip"),
        ("Content-MD5", base64.b64encode(hashlib.md5(request.body).digest()).decode()),
        *extra,
        ("X-Amz-Date", amz_date),
        ("X-Amz-Content-SHA256", hashlib.sha256(request.body).hexdigest()),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{amz_date[:8]}/{region}/s3/aws4_request, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}",
        ),
    )


def signed_just_now(request: Request) -> bool:
    signed_at = datetime.strptime(request.header("X-Amz-Date") or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return abs((datetime.now(UTC) - signed_at).total_seconds()) < 60


# -- translation ---------------------------------------------------------------------------


def test_the_spec_scenario_becomes_one_signed_put_of_a_gzip_json_lines_file():
    events = spec_events.scenario()
    [request] = render(destination, SETTINGS, events)
    assert request.method == "PUT"
    content_hash = hashlib.sha256(lines_of(events)).hexdigest()[:16]
    assert request.url == (
        f"https://acme-archive.s3.us-east-1.amazonaws.com/segment-logs/web-prod/{DAY_2026_11_28}/"
        f"{FIRST_RECEIVED_MS}-{content_hash}.gz"
    )
    assert request.headers == expected_headers(request)
    assert signed_just_now(request)
    assert gzip.decompress(request.body) == lines_of(events)
    assert archived(request) == events  # every call type, each message whole, in log order


def test_the_gzip_stream_carries_no_timestamp_so_a_batch_always_gives_the_same_bytes():
    [request] = render(destination, SETTINGS, spec_events.scenario())
    assert request.body[:2] == b"\x1f\x8b"
    assert request.body[4:8] == b"\x00\x00\x00\x00"  # MTIME


def test_a_retried_batch_gets_the_same_key_and_body_and_another_batch_another_key():
    events = spec_events.scenario()
    [first] = render(destination, SETTINGS, events)
    [again] = render(destination, SETTINGS, copy.deepcopy(events))
    [other] = render(destination, SETTINGS, events[:-1])
    assert (again.url, again.body) == (first.url, first.body)
    assert other.url != first.url
    assert other.url.rsplit("/", 1)[1] == file_name(events[:-1])


def test_the_prefix_goes_before_segment_logs_without_doubled_slashes():
    [request] = render(destination, settings(prefix="/archive/segment/"), spec_events.scenario())
    assert urlsplit(request.url).path == (
        f"/archive/segment/segment-logs/web-prod/{DAY_2026_11_28}/{file_name(spec_events.scenario())}"
    )


def test_events_received_on_two_days_are_filed_under_their_own_day():
    events = spec_events.scenario()
    for event in events[6:]:
        event["receivedAt"] = "2026-11-29T00:00:01.000Z"
    before, after = render(destination, SETTINGS, events)
    assert urlsplit(before.url).path == f"/segment-logs/web-prod/{DAY_2026_11_28}/{file_name(events[:6])}"
    assert urlsplit(after.url).path == f"/segment-logs/web-prod/1795910400000/{file_name(events[6:])}"
    assert archived(before) == events[:6]
    assert archived(after) == events[6:]


def test_an_event_without_receivedAt_is_skipped_with_the_reason():
    event = spec_events.order_completed()
    del event["receivedAt"]
    with pytest.raises(Skip, match="receivedAt"):
        destination.translate(event, SETTINGS)


def test_an_endpoint_url_is_addressed_path_style_and_the_region_signs():
    configured = settings(base_url="http://127.0.0.1:9000/", region="eu-central-1")
    [request] = render(destination, configured, spec_events.scenario())
    assert request.url == (
        f"http://127.0.0.1:9000/acme-archive/segment-logs/web-prod/{DAY_2026_11_28}/"
        f"{file_name(spec_events.scenario())}"
    )
    assert request.headers == expected_headers(request, region="eu-central-1")


def test_a_bucket_name_with_dots_is_addressed_path_style_on_aws():
    [request] = render(destination, settings(bucket="logs.acme.example"), [spec_events.page()])
    assert request.url.startswith("https://s3.us-east-1.amazonaws.com/logs.acme.example/segment-logs/")


def test_key_characters_outside_the_unreserved_set_are_percent_encoded_and_signed_so():
    configured = settings(prefix="raw events+2026", source_id="web shop")
    [request] = render(destination, configured, [spec_events.page()])
    assert urlsplit(request.url).path.startswith("/raw%20events%2B2026/segment-logs/web%20shop/")
    assert request.headers == expected_headers(request)


def test_server_side_encryption_is_requested_in_a_signed_header():
    [request] = render(destination, settings(server_side_encryption="true"), [spec_events.page()])
    assert request.headers == expected_headers(request, extra=(("x-amz-server-side-encryption", "AES256"),))


# -- batching ------------------------------------------------------------------------------


def small_events(count: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": "Tick",
            "messageId": f"m-{index}",
            "receivedAt": "2026-11-28T10:00:05.300Z",
        }
        for index in range(count)
    ]


def test_25000_events_are_cut_into_files_of_10000():
    requests = render(destination, SETTINGS, small_events(25_000))
    assert [len(archived(request)) for request in requests] == [10_000, 10_000, 5_000]
    assert len({request.url for request in requests}) == 3


def test_large_events_are_cut_into_files_of_at_most_8_mb_of_json():
    events = small_events(40)
    for event in events:
        event["properties"] = {"blob": "x" * 500_000}
    requests = render(destination, SETTINGS, events)
    sizes = [len(gzip.decompress(request.body)) for request in requests]
    assert [len(archived(request)) for request in requests] == [15, 15, 10]
    assert max(sizes) <= 8_000_000
    assert [event["messageId"] for request in requests for event in archived(request)] == [
        event["messageId"] for event in events
    ]


def test_the_file_size_and_wait_are_settings():
    assert destination.batching_policy(SETTINGS) == Batching(10_000, 8_000_000, 60.0)
    configured = settings(batch_events="500", batch_wait="5")
    assert destination.batching_policy(configured) == Batching(500, 8_000_000, 5.0)
    assert [len(archived(r)) for r in render(destination, configured, small_events(1200))] == [500, 500, 200]


def test_the_rate_limit_is_s3s_put_rate_per_prefix_and_messageId_travels_in_each_line():
    assert destination.default_rate_limit == 3500
    assert destination.dedupe_field == "messageId"


# -- responses -----------------------------------------------------------------------------


def s3_error(code: str, message: str, **details: str) -> bytes:
    extra = "".join(f"<{name}>{value}</{name}>" for name, value in details.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
        f"{extra}<RequestId>4442587FB7D0A2F9</RequestId><HostId>aHostId=</HostId></Error>"
    ).encode()


def classify(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    [request] = render(destination, SETTINGS, [spec_events.page()])
    return destination.classify(Response(status, headers or {}, body), request, 1)


def test_a_stored_object_is_delivered():
    outcome = classify(200, b"", {"etag": '"9b2cf535f27731c974343645a3985328"'})
    assert outcome.verdict is Verdict.DELIVERED


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (503, "SlowDown", "Please reduce your request rate."),
        (503, "ServiceUnavailable", "Reduce your request rate."),
        (500, "InternalError", "We encountered an internal error. Please try again."),
        (400, "RequestTimeout", "Your socket connection to the server was not read from or written to."),
        (
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        ),
        (
            409,
            "OperationAborted",
            "A conflicting conditional operation is currently in progress. Please try again.",
        ),
    ],
)
def test_transient_s3_errors_are_retried_with_their_code(status, code, message):
    outcome = classify(status, s3_error(code, message))
    assert outcome.verdict is Verdict.RETRY
    assert outcome.reason == f"HTTP {status} {code}: {message}"


def test_slow_down_honours_retry_after():
    outcome = classify(503, s3_error("SlowDown", "Please reduce your request rate."), {"retry-after": "7"})
    assert (outcome.verdict, outcome.retry_after) == (Verdict.RETRY, 7.0)


@pytest.mark.parametrize(
    ("status", "code", "message", "details", "shown"),
    [
        (403, "AccessDenied", "Access Denied", {}, ""),
        (
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            {},
            "",
        ),
        (
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
            {},
            "",
        ),
        (
            404,
            "NoSuchBucket",
            "The specified bucket does not exist",
            {"BucketName": "acme-archive"},
            " (BucketName: acme-archive)",
        ),
        (
            301,
            "PermanentRedirect",
            "The bucket you are attempting to access must be addressed using the specified endpoint.",
            {"Bucket": "acme-archive", "Endpoint": "acme-archive.s3.eu-west-1.amazonaws.com"},
            " (Endpoint: acme-archive.s3.eu-west-1.amazonaws.com)",
        ),
        (
            400,
            "AuthorizationHeaderMalformed",
            "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'",
            {"Region": "eu-west-1"},
            " (Region: eu-west-1)",
        ),
        (400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.", {}, ""),
    ],
)
def test_permanent_s3_errors_give_up_with_the_code_and_what_to_fix(status, code, message, details, shown):
    outcome = classify(status, s3_error(code, message, **details))
    assert outcome.verdict is Verdict.GIVE_UP
    assert outcome.reason == f"HTTP {status} {code}: {message}{shown}"


def test_errors_in_a_namespace_are_read_too():
    body = b'<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code>NoSuchBucket</Code><Message>gone</Message></Error>'
    assert classify(404, body).reason == "HTTP 404 NoSuchBucket: gone"


def test_answers_without_s3_xml_follow_the_status():
    assert classify(502, b"<html>Bad Gateway</html>").verdict is Verdict.RETRY
    assert classify(429, b"", {"retry-after": "3"}).retry_after == 3.0
    assert classify(400, b"bad request").verdict is Verdict.GIVE_UP


# -- settings and catalog ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["bucket", "access_key_id", "secret_access_key", "source_id"])
def test_a_missing_required_setting_is_named(missing):
    raw = {key: value for key, value in REQUIRED.items() if key != missing}
    with pytest.raises(SettingsError, match=f"'{missing}'"):
        parse_settings(destination.Settings, raw, "s3")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("bucket", "Acme_Archive"),
        ("bucket", "ab"),
        ("region", "EU West"),
        ("source_id", "web/prod"),
        ("batch_events", "0"),
        ("base_url", "s3.example.com"),
    ],
)
def test_invalid_settings_are_refused_with_their_name(name, value):
    with pytest.raises(SettingsError, match=f"'{name}'"):
        settings(**{name: value})


def test_only_the_secret_access_key_is_secret():
    secrets = {spec.name for spec in settings_schema(destination.Settings) if spec.secret}
    assert secrets == {"secret_access_key"}


def test_the_destination_is_in_the_catalog_as_storage():
    entry = catalog()["s3"]
    assert entry is destination
    assert (entry.name, entry.category) == ("Amazon S3", Category.STORAGE)
    names = [spec["name"] for spec in entry.catalog_entry()["settings"]]
    assert {"bucket", "region", "base_url", "prefix", "source_id", "batch_events", "batch_wait"} <= set(names)
