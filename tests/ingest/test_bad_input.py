"""Every kind of bad request gets its documented answer, and the server keeps serving.

Contract §1.2–§1.8: 400 only for bad JSON and over-size payloads, 200 for semantically
invalid events (recorded as failed on ingest), 401 for write keys we do not know.
"""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Server, server_env
from tests.ingest.helpers import (
    assert_error,
    assert_still_serving,
    assert_success,
    failed,
    new_id,
    now_iso,
    post,
    stored_ids,
    track,
)

ORIGIN = "https://shop.example"
_GZIP = {"content-encoding": "gzip"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for this module (a fresh one per test would dominate the run time).

    Tests run one at a time, so each one's events are those received since it began
    (the `since` fixture); the checks after every bad request also prove the shared
    server survived it.
    """
    data_dir = tmp_path_factory.mktemp("bad-input") / "data"
    data_dir.mkdir()
    shared = Server(data_dir, server_env(data_dir)).start()
    yield shared
    shared.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.write_key


@pytest.fixture
def since() -> str:
    return now_iso()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


# -- bodies that are not JSON objects ----------------------------------------------------
def test_malformed_json_is_400_invalid_json(server: Server, key: str, since: str) -> None:
    for path in ("/v1/track", "/v1/t", "/v1/batch", "/v1/b"):
        for body in [b"{", b'{"userId": "u",}', b"nope", b'{"a": 1}{"b": 2}', b"\x00", b"{'single': 1}"]:
            assert_error(post(server, path, content=body, key=key), 400, "invalid_json")
            assert_still_serving(server, key)
    assert failed(server, "--since", since) == []


def test_empty_body_is_400(server: Server, key: str) -> None:
    for path in ("/v1/track", "/v1/t", "/v1/batch", "/v1/b"):
        for body in (b"", b"  \r\n\t "):
            assert_error(post(server, path, content=body, key=key), 400, "invalid_json")
    assert_error(post(server, "/v1/batch", content=gzipped(b""), key=key, headers=_GZIP), 400)
    assert_still_serving(server, key)


def test_body_must_be_a_json_object(server: Server, key: str, since: str) -> None:
    for path in ("/v1/track", "/v1/batch", "/v1/b"):
        for body in (b"[]", orjson.dumps([track(new_id())]), b'"track"', b"42", b"null", b"true"):
            assert_error(post(server, path, content=body, key=key), 400, "invalid_json")
    assert stored_ids(server, "--since", since) == []
    assert_still_serving(server, key)


def test_batch_without_a_batch_array_is_400(server: Server, key: str) -> None:
    for payload in ({}, {"batch": track(new_id())}, {"batch": "[]"}, {"batch": None}):
        assert_error(post(server, "/v1/batch", payload, key=key), 400, "invalid_batch")
    for payload in ({"batch": [], "context": "x"}, {"batch": [], "integrations": []}):
        assert_error(post(server, "/v1/batch", payload, key=key), 400)
    assert_still_serving(server, key)


def test_invalid_utf8_is_400(server: Server, key: str, since: str) -> None:
    bodies = [
        b'{"userId": "u", "event": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"userId": "u", "event": "\xff\xfe"}',
        b'{"userId": "u", "\xc3": "truncated sequence in a key", "event": "e"}',
        b'{"userId": "u", "event": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"userId": "u", "event": "\\ud800"}',  # a lone surrogate escape
    ]
    for path in ("/v1/track", "/v1/t"):
        for body in bodies:
            assert_error(post(server, path, content=body, key=key), 400, "invalid_json")
    batch = b'{"batch": [{"type": "track", "userId": "u", "event": "\xff"}]}'
    assert_error(post(server, "/v1/batch", content=batch, key=key), 400, "invalid_json")
    assert stored_ids(server, "--since", since) == []
    assert_still_serving(server, key)


# -- sizes -----------------------------------------------------------------------------------
def event_of_size(size: int, message_id: str) -> dict[str, Any]:
    """A valid track event whose JSON is exactly `size` bytes."""
    event = track(message_id, properties={"pad": ""})
    event["properties"]["pad"] = "x" * (size - len(orjson.dumps(event)))
    assert len(orjson.dumps(event)) == size
    return event


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t"])
def test_single_event_over_32_kb_is_400(server: Server, key: str, path: str, since: str) -> None:
    too_big = event_of_size(32 * 1024 + 1, new_id("big"))
    response = post(server, path, too_big, key=key)
    body = assert_error(response, 400, "request_too_large")
    assert "32 KB" in body["message"]
    # Compression does not get around the limit.
    headers = _GZIP
    assert_error(post(server, path, content=gzipped(orjson.dumps(too_big)), key=key, headers=headers), 400)
    # Right at the limit is fine.
    fits = event_of_size(32 * 1024, new_id("fits"))
    assert_success(post(server, path, fits, key=key))
    assert stored_ids(server, "--since", since) == [fits["messageId"]]
    assert_still_serving(server, key)


def test_batch_body_over_500_kb_is_400_and_nothing_is_stored(server: Server, key: str, since: str) -> None:
    events = [event_of_size(10_000, new_id("b")) for _ in range(52)]
    body = orjson.dumps({"batch": events})
    assert len(body) > 500 * 1024
    error = assert_error(post(server, "/v1/batch", content=body, key=key), 400, "request_too_large")
    assert "500 KB" in error["message"]
    assert stored_ids(server, "--since", since) == []
    # analytics-python sends batches of up to 475,000 bytes: those must pass.
    python_sized = orjson.dumps({"batch": events[:47]})
    assert 450_000 < len(python_sized) <= 475_000
    assert_success(post(server, "/v1/batch", content=python_sized, key=key))
    assert stored_ids(server, "--since", since) == [event["messageId"] for event in events[:47]]
    assert_still_serving(server, key)


def test_over_2500_events_is_400_naming_the_limit(server: Server, key: str, since: str) -> None:
    events = [{"type": "track", "userId": "u", "event": "e", "messageId": f"n{i}"} for i in range(2501)]
    error = assert_error(post(server, "/v1/batch", {"batch": events}, key=key), 400, "too_many_events")
    assert "2500" in error["message"].replace(",", "")
    assert stored_ids(server, "--since", since) == []
    assert_success(post(server, "/v1/batch", {"batch": events[:2500]}, key=key))
    assert len(stored_ids(server, "--since", since)) == 2500
    assert_still_serving(server, key)


def test_an_oversize_event_inside_a_batch_fails_alone(server: Server, key: str, since: str) -> None:
    big_id, ok_id = new_id("big"), new_id("ok")
    batch = [event_of_size(40_000, big_id), track(ok_id)]
    assert_success(post(server, "/v1/batch", {"batch": batch}, key=key))
    assert stored_ids(server, "--since", since) == [ok_id]
    # `events --failed` used to fail outright here: the 40 KB body was cut at 32 KB.
    [failure] = failed(server, "--since", since)
    assert failure["code"] == "message_too_large"
    assert failure["event"]["messageId"] == big_id
    assert_still_serving(server, key)


def test_32_kb_counts_the_event_as_sent_not_the_servers_additions(
    server: Server, key: str, since: str
) -> None:
    """An event just under 32 KB, stored with receivedAt, timestamp, channel and context added,
    is over 32 KB as stored: it must still be accepted, as Segment accepts it."""
    just_under = event_of_size(32 * 1024 - 10, new_id("edge"))
    over = event_of_size(32 * 1024 + 1, new_id("over"))
    assert_success(post(server, "/v1/batch", {"batch": [just_under, over]}, key=key))
    [stored] = server.events("--since", since)
    assert stored["messageId"] == just_under["messageId"]
    assert len(orjson.dumps(stored)) > 32 * 1024
    [failure] = failed(server, "--since", since)
    assert failure["code"] == "message_too_large"
    assert failure["event"]["messageId"] == over["messageId"]
    assert "receivedAt" not in failure["event"]  # kept as sent, without the server's additions


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def zeros_gzip_bomb(megabytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = b"\0" * (1 << 20)
    return b"".join(compressor.compress(chunk) for _ in range(megabytes)) + compressor.flush()


def test_gzip_bomb_is_400_without_the_memory_exploding(make_server: Callable[..., Server]) -> None:
    # A fresh server: the peak-RSS mark must not already be raised by other tests' requests,
    # nor by the built-in warehouse loading DuckDB in the background while we measure.
    server = make_server(TRACKYARD_DEFAULT_WAREHOUSE="off").start()
    key = server.write_key
    assert server.process is not None
    bomb = zeros_gzip_bomb(64)  # 64 MB of zeros, ~65 KB on the wire
    small_bomb = zeros_gzip_bomb(24)  # under the 32 KB a single event may take on the wire
    assert len(bomb) < 100 * 1024
    assert len(small_bomb) < 32 * 1024
    assert_success(post(server, "/v1/batch", {"batch": [track(new_id())]}, key=key))  # warm up
    before = peak_rss_kb(server.process.pid)
    for path, body in [
        ("/v1/batch", bomb),
        ("/v1/b", bomb),
        ("/v1/track", small_bomb),
        ("/v1/t", small_bomb),
    ]:
        assert_error(post(server, path, content=body, key=key, headers=_GZIP), 400, "request_too_large")
    growth_mb = (peak_rss_kb(server.process.pid) - before) / 1024
    assert growth_mb < 24, f"peak RSS grew by {growth_mb:.0f} MB decompressing a 64 MB bomb"
    assert_still_serving(server, key)


def test_invalid_gzip_is_400(server: Server, key: str, since: str) -> None:
    good = gzipped(orjson.dumps({"batch": [track(new_id())]}))
    for body in (b"definitely not gzip", orjson.dumps({"batch": []}), good[:-12], good[:15]):
        assert_error(post(server, "/v1/batch", content=body, key=key, headers=_GZIP), 400, "invalid_gzip")
    assert stored_ids(server, "--since", since) == []
    message_id = new_id("gz")
    compressed = gzipped(orjson.dumps({"batch": [track(message_id)]}))
    assert_success(post(server, "/v1/batch", content=compressed, key=key, headers=_GZIP))
    assert stored_ids(server, "--since", since) == [message_id]
    assert_still_serving(server, key)


def nested_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_deep_nesting_is_400_or_failed_never_a_5xx(server: Server, key: str, path: str, since: str) -> None:
    sent: dict[int, str] = {}
    for depth in (10_000, 1_023, 300, 254, 100):
        message_id = sent[depth] = new_id(f"deep{depth}")
        event = b'{"type":"track","userId":"u","event":"e","messageId":"%s","properties":{"a":%s}}' % (
            message_id.encode(),
            nested_arrays(depth),
        )
        body = event if path == "/v1/track" else b'{"batch":[%s]}' % event
        response = post(server, path, content=body, key=key)
        assert response.status_code in (200, 400), (depth, response.status_code, response.text)
        if response.status_code == 400:
            assert response.json()["code"] == "invalid_json"
        assert server.process is not None
        assert server.process.poll() is None
    stored = stored_ids(server, "--since", since)
    failures = {f["event"].get("messageId"): f["code"] for f in failed(server, "--since", since)}
    for depth, message_id in sent.items():
        # Answered 200, each event ended up in exactly one place.
        assert (message_id in stored) + (message_id in failures) <= 1, depth
    assert sent[100] in stored
    assert failures[sent[300]] == "nesting_too_deep"
    assert sent[10_000] not in stored
    assert_still_serving(server, key)


# -- semantically invalid events: 200, stored as failed ----------------------------------
WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("user_id_object", {"type": "track", "event": "e", "userId": {"id": 1}}, "invalid_user_id"),
    ("user_id_bool", {"type": "track", "event": "e", "userId": True}, "invalid_user_id"),
    ("user_id_array", {"type": "track", "event": "e", "userId": ["u"]}, "invalid_user_id"),
    ("anonymous_id_object", {"type": "page", "anonymousId": {}}, "invalid_anonymous_id"),
    ("event_number", {"type": "track", "userId": "u", "event": 42}, "no_event_name"),
    ("event_missing", {"type": "track", "userId": "u"}, "no_event_name"),
    (
        "properties_array",
        {"type": "track", "userId": "u", "event": "e", "properties": [1]},
        "invalid_properties",
    ),
    (
        "properties_string",
        {"type": "track", "userId": "u", "event": "e", "properties": "x"},
        "invalid_properties",
    ),
    ("traits_number", {"type": "identify", "userId": "u", "traits": 5}, "invalid_traits"),
    ("context_string", {"type": "track", "userId": "u", "event": "e", "context": "x"}, "invalid_context"),
    (
        "integrations_array",
        {"type": "track", "userId": "u", "event": "e", "integrations": []},
        "invalid_integrations",
    ),
    (
        "timestamp_number",
        {"type": "track", "userId": "u", "event": "e", "timestamp": 1714557600000},
        "invalid_timestamp",
    ),
    (
        "timestamp_garbage",
        {"type": "track", "userId": "u", "event": "e", "timestamp": "yesterday"},
        "invalid_timestamp",
    ),
    ("sent_at_garbage", {"type": "track", "userId": "u", "event": "e", "sentAt": "soon"}, "invalid_sent_at"),
    (
        "message_id_object",
        {"type": "track", "userId": "u", "event": "e", "messageId": {"id": 1}},
        "invalid_message_id",
    ),
    (
        "message_id_too_long",
        {"type": "track", "userId": "u", "event": "e", "messageId": "x" * 101},
        "invalid_message_id",
    ),
    ("type_unknown", {"type": "purchase", "userId": "u"}, "invalid_type"),
    ("type_missing", {"userId": "u", "event": "e"}, "invalid_type"),
    ("type_array", {"type": ["track"], "userId": "u", "event": "e"}, "invalid_type"),
    ("group_id_bool", {"type": "group", "userId": "u", "groupId": False}, "invalid_group_id"),
    ("group_id_missing", {"type": "group", "userId": "u"}, "no_group_id"),
    ("previous_id_array", {"type": "alias", "userId": "u", "previousId": ["p"]}, "invalid_previous_id"),
    ("previous_id_missing", {"type": "alias", "userId": "u"}, "no_user_previous_id"),
    ("no_ids", {"type": "track", "event": "e", "userId": None}, "no_user_anon_id"),
]
NOT_OBJECTS: list[Any] = [42, "track", None, [], True]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b"])
def test_wrong_types_in_a_batch_are_200_and_listed_as_failed(
    server: Server, key: str, path: str, since: str
) -> None:
    first, last = new_id("valid"), new_id("valid")
    invalid = [{**item, "case": case} for case, item, _ in WRONG_TYPES]
    batch = [track(first), *invalid, *NOT_OBJECTS, track(last)]
    response = post(server, path, {"batch": batch}, key=key)
    assert_success(response)
    assert stored_ids(server, "--since", since) == [first, last]

    failures = failed(server, "--since", since)
    assert len(failures) == len(WRONG_TYPES) + len(NOT_OBJECTS)
    for failure, (case, _, code) in zip(failures[: len(WRONG_TYPES)], WRONG_TYPES, strict=True):
        assert failure["event"]["case"] == case
        assert failure["code"] == code, case
        assert isinstance(failure["reason"], str)
        assert failure["reason"], case
        assert failure["source"] == "default"
    by_case = {failure["event"].get("case"): failure["event"] for failure in failures[: len(WRONG_TYPES)]}
    # The failure keeps the value its reason is about.
    assert by_case["timestamp_number"]["timestamp"] == 1714557600000
    assert by_case["timestamp_garbage"]["timestamp"] == "yesterday"
    assert by_case["properties_array"]["properties"] == [1]
    for failure, item in zip(failures[len(WRONG_TYPES) :], NOT_OBJECTS, strict=True):
        assert failure["code"] == "invalid_event"
        assert failure["event"] == item
    assert_still_serving(server, key)


def test_an_invalid_single_event_is_200_and_failed(server: Server, key: str, since: str) -> None:
    codes: list[str] = []
    for path, body, code in [
        ("/v1/track", {"event": "no ids"}, "no_user_anon_id"),
        ("/v1/t", {"anonymousId": "a", "event": ""}, "no_event_name"),
        ("/v1/group", {"userId": "u"}, "no_group_id"),
        ("/v1/a", {"userId": "u"}, "no_user_previous_id"),
        ("/v1/identify", {"userId": True}, "invalid_user_id"),
        ("/v1/p", {"anonymousId": "a", "properties": "x"}, "invalid_properties"),
    ]:
        assert_success(post(server, path, body, key=key))
        codes.append(code)
    assert [failure["code"] for failure in failed(server, "--since", since)] == codes
    assert stored_ids(server, "--since", since) == []
    assert_still_serving(server, key)


# -- authentication ------------------------------------------------------------------------
def test_unknown_write_key_is_401(server: Server, key: str, since: str) -> None:
    body = assert_error(
        post(server, "/v1/track", track(new_id()), key="no-such-key"), 401, "invalid_write_key"
    )
    assert "source" in body["message"]
    batch = {"writeKey": "no-such-key", "batch": [track(new_id())]}
    assert_error(post(server, "/v1/batch", batch), 401, "invalid_write_key")
    assert stored_ids(server, "--since", since) == []
    assert failed(server, "--since", since) == []
    assert_still_serving(server, key)


def test_missing_write_key_is_401(server: Server, key: str, since: str) -> None:
    for path, payload in [
        ("/v1/track", track(new_id())),
        ("/v1/t", track(new_id(), writeKey="")),
        ("/v1/batch", {"batch": [track(new_id())]}),
        ("/v1/b", {"batch": []}),
    ]:
        body = assert_error(post(server, path, payload), 401, "missing_write_key")
        assert "write key" in body["message"]
    assert_error(post(server, "/v1/track", track(new_id()), headers={"authorization": "Basic !!!"}), 401)
    assert stored_ids(server, "--since", since) == []
    assert_still_serving(server, key)


def test_write_key_from_basic_auth_body_or_first_batch_item(server: Server, key: str, since: str) -> None:
    sent: list[str] = []

    def new() -> dict[str, Any]:
        sent.append(new_id("auth"))
        return track(sent[-1])

    basic_no_colon = {"authorization": "Basic " + base64.b64encode(key.encode()).decode()}
    assert_success(post(server, "/v1/track", new(), key=key))  # Basic base64(key + ":")
    assert_success(post(server, "/v1/track", new(), headers=basic_no_colon))
    assert_success(post(server, "/v1/track", {**new(), "writeKey": key}))
    assert_success(post(server, "/v1/t", {**new(), "writeKey": key}))  # analytics.js < 1.84
    assert_success(post(server, "/v1/batch", {"writeKey": key, "batch": [new()]}))  # analytics-python
    assert_success(post(server, "/v1/b", {"batch": [{**new(), "writeKey": key}, new()]}))  # first item
    bearer = {"authorization": "Bearer some-oauth-token"}
    assert_success(post(server, "/v1/batch", {"writeKey": key, "batch": [new()]}, headers=bearer))
    assert stored_ids(server, "--source", "default", "--since", since) == sent
    assert all("writeKey" not in event for event in server.events("--since", since))


# -- routes and methods -----------------------------------------------------------------------
CALLS: dict[str, dict[str, Any]] = {
    "track": {"userId": "u", "event": "Clicked"},
    "identify": {"userId": "u", "traits": {"plan": "pro"}},
    "page": {"anonymousId": "a", "name": "Home"},
    "screen": {"anonymousId": "a", "name": "Home"},
    "group": {"userId": "u", "groupId": "g"},
    "alias": {"userId": "u", "previousId": "p"},
}


def test_every_collection_path(server: Server, key: str, since: str) -> None:
    expected: dict[str, tuple[str, bool]] = {}  # messageId -> (type, sent to a client endpoint)
    for call_type, fields in CALLS.items():
        for path, client in ((f"/v1/{call_type}", False), (f"/v1/{call_type[0]}", True)):
            message_id = new_id(call_type)
            expected[message_id] = (call_type, client)
            response = post(server, path, {**fields, "messageId": message_id}, key=key)
            assert response.status_code == 200, path
            assert response.json() == {"success": True}, path
    for path, client in (("/v1/batch", False), ("/v1/import", False), ("/v1/b", True)):
        batch = []
        for call_type, fields in CALLS.items():
            message_id = new_id(call_type)
            expected[message_id] = (call_type, client)
            batch.append({"type": call_type, **fields, "messageId": message_id})
        response = post(server, path, {"batch": batch}, key=key)
        assert response.status_code == 200, path
        assert response.json() == {"success": True}, path
    events = {event["messageId"]: event for event in server.events("--since", since)}
    assert set(events) == set(expected)
    for message_id, (call_type, client) in expected.items():
        event = events[message_id]
        assert event["type"] == call_type
        assert event["channel"] == ("browser" if client else "server")
        assert ("ip" in event["context"]) is client
        if client:
            assert event["context"]["ip"] == "127.0.0.1"


def test_trailing_slash_and_success_body(server: Server, key: str) -> None:
    response = post(server, "/v1/track/", track(new_id()), key=key)
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert response.headers["content-type"].startswith("application/json")


def test_metrics_are_answered_and_not_stored(server: Server, key: str, since: str) -> None:
    series = {
        "series": [
            {
                "type": "Counter",
                "metric": "analytics_js.invoke",
                "value": 1,
                "tags": {"library": "analytics.js", "library_version": "next-1.84.3"},
            }
        ]
    }
    response = post(server, "/v1/m", series, headers={"content-type": "text/plain", "origin": ORIGIN})
    assert_success(response)
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert_success(post(server, "/v1/m", series, key=key))
    assert stored_ids(server, "--since", since) == []
    assert failed(server, "--since", since) == []
    assert_still_serving(server, key)


def test_non_post_methods_are_405(server: Server, key: str, since: str) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        for path in ("/v1/track", "/v1/t", "/v1/batch", "/v1/b", "/v1/import", "/v1/m"):
            body = orjson.dumps(track(new_id()))
            response = httpx.request(method, f"{server.url}{path}", content=body, auth=(key, ""), timeout=10)
            assert_error(response, 405, "method_not_allowed")
    assert stored_ids(server, "--since", since) == []
    assert_still_serving(server, key)


def test_settings_rejects_post(server: Server, key: str) -> None:
    response = post(server, f"/v1/projects/{key}/settings", track(new_id()), key=key)
    assert_error(response, 405)


# -- browsers: CORS and text/plain -----------------------------------------------------------
def header_names(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


@pytest.mark.parametrize("path", ["/v1/t", "/v1/b", "/v1/batch", "/v1/projects/anything/settings"])
def test_cors_preflight(server: Server, path: str) -> None:
    response = httpx.options(
        f"{server.url}{path}",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,x-retry-count",
        },
        timeout=10,
    )
    assert 200 <= response.status_code < 300
    assert response.headers["access-control-allow-origin"] in (ORIGIN, "*")
    assert {"authorization", "x-retry-count", "content-type"} <= header_names(
        response.headers["access-control-allow-headers"]
    )
    assert "post" in header_names(response.headers["access-control-allow-methods"]) or (
        response.headers["access-control-allow-methods"] == "*"
    )
    assert int(response.headers["access-control-max-age"]) > 0


def test_preflight_allows_custom_headers_the_page_configured(server: Server) -> None:
    response = httpx.options(
        f"{server.url}/v1/t",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,x-tenant",
        },
        timeout=10,
    )
    assert 200 <= response.status_code < 300
    assert "x-tenant" in header_names(response.headers["access-control-allow-headers"])


def test_every_post_answer_carries_cors(server: Server, key: str) -> None:
    origin = {"origin": ORIGIN}
    answers = [
        post(server, "/v1/t", track(new_id()), key=key, headers=origin),  # 200
        post(server, "/v1/t", content=b"{", key=key, headers=origin),  # 400
        post(server, "/v1/t", event_of_size(40_000, new_id()), key=key, headers=origin),  # 400
        post(server, "/v1/t", track(new_id()), key="unknown", headers=origin),  # 401
        post(server, "/v1/t", track(new_id()), headers=origin),  # 401
        httpx.get(f"{server.url}/v1/t", headers=origin, timeout=10),  # 405
        httpx.get(f"{server.url}/v1/projects/{key}/settings", headers=origin, timeout=10),  # 200
        httpx.get(f"{server.url}/v1/projects/unknown/settings", headers=origin, timeout=10),  # 404
    ]
    assert [answer.status_code for answer in answers] == [200, 400, 400, 401, 401, 405, 200, 404]
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == ORIGIN, answer.status_code
    # Without an Origin (server SDKs) any origin is allowed.
    assert post(server, "/v1/batch", {"batch": []}, key=key).headers["access-control-allow-origin"] == "*"


def test_the_body_is_json_whatever_the_content_type(server: Server, key: str, since: str) -> None:
    sent = []
    for content_type in (
        "text/plain",  # analytics.js and Kotlin
        "text/plain;charset=UTF-8",
        "application/json; charset=utf-8",  # Swift
        "application/x-www-form-urlencoded",
        None,
    ):
        sent.append(new_id("ct"))
        headers = {"content-type": content_type} if content_type else {}
        response = httpx.post(
            f"{server.url}/v1/t",
            content=orjson.dumps({**track(sent[-1]), "writeKey": key}),
            headers=headers,
            timeout=10,
        )
        assert_success(response)
    assert stored_ids(server, "--since", since) == sent


def test_chunked_transfer_encoding(server: Server, key: str, since: str) -> None:
    first, second = new_id("chunk"), new_id("chunk")
    body = orjson.dumps({"batch": [track(first), track(second)]})

    def chunks(data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), 7):
            yield data[start : start + 7]

    request = httpx.Request(
        "POST", f"{server.url}/v1/batch", content=chunks(body), headers={"content-type": "text/plain"}
    )
    assert request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in request.headers
    with httpx.Client(auth=(key, ""), timeout=10) as client:
        assert_success(client.send(request))
        # Chunked and gzip together, as the Kotlin and Android SDKs send.
        third = new_id("chunk")
        compressed = gzipped(orjson.dumps({"batch": [track(third)]}))
        response = client.post(f"{server.url}/v1/b", content=chunks(compressed), headers=_GZIP)
        assert_success(response)
    assert stored_ids(server, "--since", since) == [first, second, third]


# -- the settings document ---------------------------------------------------------------------
def test_settings_document(server: Server, key: str) -> None:
    response = httpx.get(f"{server.url}/v1/projects/{key}/settings", timeout=10)
    assert response.status_code == 200
    segment = response.json()["integrations"]["Segment.io"]
    assert segment["apiHost"] == f"127.0.0.1:{server.port}/v1"
    assert segment["apiKey"] == key
    assert response.headers["access-control-allow-origin"] == "*"


def test_settings_of_an_unknown_key_is_404(server: Server, key: str) -> None:
    for unknown in ("no-such-key", key + "x", "a/b"):
        response = httpx.get(f"{server.url}/v1/projects/{unknown}/settings", timeout=10)
        assert_error(response, 404)
    assert_still_serving(server, key)
