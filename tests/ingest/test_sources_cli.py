"""Sources, stored events and the admin token through the `trackyard` command, next to a running server."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import orjson

from tests.conftest import Server, free_port
from tests.ingest.helpers import assert_success, new_id, post, stored_ids, track


def source_list(server: Server) -> list[dict]:
    return [orjson.loads(line) for line in server.cli("source", "list", "--json").stdout.splitlines() if line]


def test_source_create_prints_the_write_key(server: Server) -> None:
    generated = server.cli("source", "create", "shop web").stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", generated)
    chosen = server.cli("source", "create", "backend", "--write-key", "my-own-key-123").stdout.strip()
    assert chosen == "my-own-key-123"

    sources = {source["name"]: source for source in source_list(server)}
    assert list(sources) == ["default", "shop web", "backend"]  # in creation order
    assert sources["shop web"]["write_key"] == generated
    assert sources["backend"]["write_key"] == "my-own-key-123"
    assert sources["shop web"]["slug"] == "shop_web"
    assert all(source["enabled"] for source in sources.values())
    assert len({source["id"] for source in sources.values()}) == 3


def test_a_source_created_while_serving_is_accepted_at_once(server: Server) -> None:
    sent = []
    for attempt in range(2):
        # A miss just before makes the server reload its key cache now; the new key then
        # arrives well within the cache's refresh interval (it used to get a 401 there).
        assert post(server, "/v1/track", track(new_id()), key=f"unknown-{attempt}").status_code == 401
        write_key = server.cli("source", "create", f"live-{attempt}").stdout.strip()
        sent.append(new_id("live"))
        assert_success(post(server, "/v1/track", track(sent[-1]), key=write_key))
    assert stored_ids(server, "--source", "live-0") == [sent[0]]
    assert stored_ids(server, "--source", "live-1") == [sent[1]]

    # analytics.js fetches its settings first: a new key must not get a 404 there either.
    assert httpx.get(f"{server.url}/v1/projects/missing-key/settings", timeout=10).status_code == 404
    server.cli("source", "create", "browser", "--write-key", "browser-key-1")
    assert httpx.get(f"{server.url}/v1/projects/browser-key-1/settings", timeout=10).status_code == 200


def test_duplicate_sources_fail_with_exit_status_2(server: Server) -> None:
    server.cli("source", "create", "shop", "--write-key", "shop-key")
    for args in (["shop"], ["shop", "--write-key", "other-key"], ["other", "--write-key", "shop-key"]):
        result = server.cli("source", "create", *args, check=False)
        assert result.returncode == 2, result
        assert "already exists" in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    invalid = server.cli("source", "create", "bad/name", check=False)
    assert invalid.returncode == 2
    assert "invalid" in invalid.stderr
    assert [source["name"] for source in source_list(server)] == ["default", "shop"]


def test_events_filters_and_order(server: Server) -> None:
    default_key = server.write_key
    second_key = server.cli("source", "create", "second").stdout.strip()
    sent: list[tuple[str, str]] = []  # (source, messageId), in sending order
    for index in range(6):
        source, key = ("default", default_key) if index % 2 == 0 else ("second", second_key)
        message_id = f"ev-{index}-{new_id()}"
        assert_success(post(server, "/v1/track", track(message_id), key=key))
        sent.append((source, message_id))
        time.sleep(0.003)  # distinct receivedAt milliseconds

    events = server.events()
    assert [event["messageId"] for event in events] == [m for _, m in sent]  # oldest first
    assert [e["receivedAt"] for e in events] == sorted(e["receivedAt"] for e in events)
    assert stored_ids(server, "--source", "second") == [m for s, m in sent if s == "second"]
    assert stored_ids(server, "--source", "default") == [m for s, m in sent if s == "default"]
    assert stored_ids(server, "--limit", "2") == [sent[0][1], sent[1][1]]
    assert stored_ids(server, "--limit", "0") == []

    since = events[3]["receivedAt"]
    assert stored_ids(server, "--since", since) == [m for _, m in sent[3:]]
    assert stored_ids(server, "--since", since, "--source", "default") == [sent[4][1]]
    assert stored_ids(server, "--since", since, "--source", "second", "--limit", "1") == [sent[3][1]]
    # Any ISO-8601 form works for --since, as for event timestamps.
    since_offset = since.replace("Z", "+00:00")
    assert stored_ids(server, "--since", since_offset) == [m for _, m in sent[3:]]
    assert stored_ids(server, "--since", "2999-01-01T00:00:00Z") == []


def test_events_rejects_an_unknown_source_and_bad_options(server: Server) -> None:
    for args in (["--source", "unknown"], ["--since", "yesterday"], ["--limit", "-1"]):
        result = server.cli("events", "--json", *args, check=False)
        assert result.returncode == 2, args
        assert result.stderr.strip()
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    unknown = server.cli("events", "--source", "unknown", check=False)
    assert "unknown" in unknown.stderr
    assert "does not exist" in unknown.stderr


def test_first_start_prints_the_credentials_once(make_server: Callable[..., Server]) -> None:
    server = make_server().start()
    assert server.log_path is not None
    first_log = server.log_path.read_text()
    write_key = server.write_key
    token = server.cli("admin", "token").stdout.strip().splitlines()[-1]
    assert write_key in first_log
    assert token in first_log
    assert first_log.count(token) == 1

    server.stop()
    server.port = free_port()  # a fresh log file for the second start
    server.start()
    assert server.log_path is not None
    second_log = server.log_path.read_text()
    assert "serving on" in second_log
    assert write_key not in second_log
    assert token not in second_log
    assert "tya_" not in second_log


def test_admin_token_prints_it_alone_on_its_last_line_and_rotates(server: Server) -> None:
    first = server.cli("admin", "token").stdout.splitlines()[-1]
    assert first.strip() == first
    assert re.fullmatch(r"\S{20,}", first)
    assert server.cli("admin", "token").stdout.splitlines()[-1] == first  # stable

    rotated = server.cli("admin", "token", "--rotate").stdout.splitlines()[-1]
    assert re.fullmatch(r"\S{20,}", rotated)
    assert rotated != first
    assert server.cli("admin", "token").stdout.splitlines()[-1] == rotated
