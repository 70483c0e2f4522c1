"""Deduplication on (source, messageId) over the window (contract §1.10, sdk-wire-facts "At-least-once")."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.conftest import Server
from tests.ingest.helpers import assert_success, new_id, post, stored_ids, track
from trackyard.spec import parse_ms
from trackyard.store import LogRecord
from trackyard.store.sqlite import SQLiteStore


def test_the_same_message_id_twice_in_one_request_is_stored_once(server: Server) -> None:
    key = server.write_key
    a, b = new_id("a"), new_id("b")
    batch = [track(a, event="first"), track(a, event="second"), track(b), track(a, event="third")]
    assert_success(post(server, "/v1/batch", {"batch": batch}, key=key))
    events = server.events()
    assert [event["messageId"] for event in events] == [a, b]
    assert events[0]["event"] == "first"  # the first copy wins


def test_resends_through_any_endpoint_are_stored_once(server: Server) -> None:
    key = server.write_key
    a, b = new_id("a"), new_id("b")
    assert_success(post(server, "/v1/track", track(a, event="original"), key=key))
    for _ in range(2):
        assert_success(post(server, "/v1/track", track(a, event="resent"), key=key))
        assert_success(post(server, "/v1/t", {**track(a, event="resent"), "writeKey": key}))
        assert_success(post(server, "/v1/identify", {"userId": "u", "messageId": a}, key=key))
        assert_success(post(server, "/v1/i", {"userId": "u", "messageId": a}, key=key))
        for path in ("/v1/batch", "/v1/b", "/v1/import"):
            assert_success(post(server, path, {"batch": [track(a), track(b)]}, key=key))
    events = server.events()
    assert [event["messageId"] for event in events] == [a, b]
    assert events[0]["event"] == "original"
    assert events[0]["type"] == "track"


def test_a_numeric_message_id_and_its_string_are_the_same_id(server: Server) -> None:
    key = server.write_key
    number = int(time.time_ns() % 10**15)
    assert_success(post(server, "/v1/track", track(number), key=key))
    assert_success(post(server, "/v1/track", track(str(number)), key=key))
    assert stored_ids(server) == [str(number)]


def test_the_same_message_id_in_two_sources_is_stored_in_both(server: Server) -> None:
    default_key = server.write_key
    second_key = server.cli("source", "create", "second").stdout.strip()
    a = new_id("shared")
    for _ in range(2):
        assert_success(post(server, "/v1/track", track(a), key=default_key))
        assert_success(post(server, "/v1/batch", {"batch": [track(a)]}, key=second_key))
    assert stored_ids(server, "--source", "default") == [a]
    assert stored_ids(server, "--source", "second") == [a]
    assert stored_ids(server) == [a, a]


def test_resends_after_a_restart_are_still_deduplicated(server: Server) -> None:
    key = server.write_key
    before = [new_id("before") for _ in range(5)]
    assert_success(post(server, "/v1/batch", {"batch": [track(m) for m in before]}, key=key))

    server.stop()  # a clean shutdown
    server.start()
    after_stop = new_id("after-stop")
    assert_success(post(server, "/v1/batch", {"batch": [track(m) for m in [*before, after_stop]]}, key=key))
    assert_success(post(server, "/v1/t", {**track(before[0]), "writeKey": key}))

    server.kill()  # no shutdown hook at all
    server.start()
    assert_success(post(server, "/v1/batch", {"batch": [track(m) for m in [*before, after_stop]]}, key=key))
    assert stored_ids(server) == [*before, after_stop]


def test_a_one_second_window_expires_for_ids_rebuilt_from_the_log(make_server: Callable[..., Server]) -> None:
    """TRACKYARD_DEDUPE_WINDOW_S bounds the window that a restart rebuilds from the log's tail."""
    server = make_server(TRACKYARD_DEDUPE_WINDOW_S="1").start()
    key = server.write_key
    a = new_id("window")
    assert_success(post(server, "/v1/track", track(a), key=key))
    assert_success(post(server, "/v1/track", track(a), key=key))
    [first] = server.events()
    assert first["messageId"] == a  # within the window: deduplicated

    server.stop()
    received_ms = parse_ms(first["receivedAt"])
    assert received_ms is not None
    # Wait (bounded) until the stored copy is older than the 1 s window.
    deadline = time.monotonic() + 5
    while time.time() * 1000 < received_ms + 1_200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.time() * 1000 >= received_ms + 1_200
    server.start()
    assert_success(post(server, "/v1/track", track(a), key=key))
    assert_success(post(server, "/v1/track", track(a), key=key))
    assert stored_ids(server) == [a, a]  # stored again once, then deduplicated again


# -- the window, against the store directly --------------------------------------------------
T0 = 1_746_093_600_000  # 2025-05-01T10:00:00.000Z, the start of a minute


def record(source_id: int, message_id: str, received_ms: int) -> LogRecord:
    body = orjson.dumps({"type": "track", "messageId": message_id, "event": "e", "userId": "u"})
    return LogRecord(source_id, message_id, received_ms, "track", body)


def open_store(path: Path, **options: int) -> tuple[SQLiteStore, int]:
    store = SQLiteStore(path, **options)
    store.migrate()
    source = store.create_source("default", "k-" + path.stem)
    return store, source.id


def test_the_window_ends_only_when_the_expiry_has_run(tmp_path: Path) -> None:
    store, source = open_store(tmp_path / "short.db", dedupe_window_s=1)
    try:
        assert store.append([record(source, "a", T0)]).stored == 1
        # Five seconds later the 1 s window has passed, but no expiry has run: still a duplicate.
        result = store.append([record(source, "a", T0 + 5_000)])
        assert (result.stored, result.duplicates) == (0, 1)
        # An expiry within the window's minute forgets nothing.
        assert store.prune_dedupe(T0 + 5_000) == 0
        assert store.append([record(source, "a", T0 + 6_000)]).duplicates == 1
        # Once the expiry has run past the window, the id may be stored again.
        assert store.prune_dedupe(T0 + 120_000) == 1
        result = store.append([record(source, "a", T0 + 121_000), record(source, "a", T0 + 121_000)])
        assert (result.stored, result.duplicates) == (1, 1)
        assert store.append([record(source, "a", T0 + 122_000)]).duplicates == 1
        assert Counter(event.event()["messageId"] for event in store.read_log()) == {"a": 2}
    finally:
        store.close()


def test_the_default_window_survives_an_expiry(tmp_path: Path) -> None:
    store, source = open_store(tmp_path / "default.db")
    try:
        assert store.append([record(source, "a", T0)]).stored == 1
        assert store.prune_dedupe(T0 + 3_600_000) == 0  # an hour later: well inside 24 h
        assert store.append([record(source, "a", T0 + 3_600_000)]).duplicates == 1
        assert store.prune_dedupe(T0 + 25 * 3_600_000) == 1
        assert store.append([record(source, "a", T0 + 25 * 3_600_000)]).stored == 1
    finally:
        store.close()


def test_the_window_is_per_source(tmp_path: Path) -> None:
    store, first = open_store(tmp_path / "sources.db")
    try:
        second = store.create_source("second", "k-second").id
        result = store.append([record(first, "a", T0), record(second, "a", T0), record(first, "a", T0)])
        assert (result.stored, result.duplicates) == (2, 1)
    finally:
        store.close()
