"""The admin JSON API's promises, through a real server: validated settings that name the
field at fault, write keys that rotate at once, sources deleted without lending their
history, events and failures, per-minute counts, and the live stream.

The tests share one server; each works on a source of its own."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from tests.admin.conftest import admin_token, api, browser_session, new_source
from tests.conftest import Server


def send(server: Server, write_key: str, *events: dict[str, Any]) -> None:
    """One batch request; an event without userId fails on ingest."""
    batch = [{"type": "track", "userId": "u1", **event} for event in events]
    response = httpx.post(f"{server.url}/v1/batch", auth=(write_key, ""), json={"batch": batch}, timeout=10)
    assert response.status_code == 200, response.text


def track_status(server: Server, write_key: str) -> int:
    body = {"userId": "u1", "event": "Signed Up"}
    return httpx.post(f"{server.url}/v1/track", auth=(write_key, ""), json=body, timeout=10).status_code


def test_a_destination_is_only_created_with_valid_settings_and_the_error_names_the_field(shared_server):
    new_source(shared_server, "settings-checks")
    url = "http://127.0.0.1:9"
    cases = [
        ({"settings": {}}, "url", "setting 'url' (Webhook URL) is required"),
        ({"settings": {"url": "ftp://x"}}, "url", "must be an http:// or https:// URL"),
        ({"settings": {"url": url, "batch_size": "many"}}, "batch_size", "must be a integer"),
        ({"settings": {"url": url, "colour": "red"}}, "colour", "unknown setting 'colour'"),
        ({"settings": "url=http://x"}, "settings", "settings must be an object"),
        ({"type": "fax"}, "type", "no destination type 'fax'"),
        ({"name": "bad/name"}, "name", "destination name 'bad/name' is invalid"),
    ]
    body = {"name": "checked", "source": "settings-checks", "type": "webhook", "settings": {"url": url}}
    with api(shared_server) as client:
        for change, field, message in cases:
            response = client.post("/destinations", json={**body, **change})
            assert response.status_code == 400, (change, response.text)
            assert response.json()["field"] == field, (change, response.text)
            assert message in response.json()["message"], (change, response.text)
        assert client.get("/destinations/checked").status_code == 404

        assert client.post("/destinations", json={**body, "source": "nowhere"}).status_code == 404
        created = client.post("/destinations", json={**body, "enabled": False})
        assert created.status_code == 201 and created.json()["enabled"] is False
        assert client.post("/destinations", json=body).status_code == 409
        assert client.post("/destinations/checked/enable").json()["enabled"] is True
        patched = client.patch(
            "/destinations/checked", json={"settings": {"url": "http://127.0.0.1:8"}, "enabled": False}
        )
        assert (
            patched.json()["settings"]["url"] == "http://127.0.0.1:8" and patched.json()["enabled"] is False
        )


def test_a_rotated_write_key_stops_working_at_once_and_the_new_one_works(shared_server):
    old = new_source(shared_server, "rotating")
    assert track_status(shared_server, old) == 200
    with api(shared_server) as client:
        rotated = client.post("/sources/rotating/write-key")
    assert rotated.status_code == 200
    new = rotated.json()["write_key"]
    assert new != old and len(new) == 32
    assert track_status(shared_server, old) == 401
    assert track_status(shared_server, new) == 200


def test_a_deleted_source_loses_its_key_frees_its_name_and_lends_its_history_to_no_one(shared_server):
    write_key = new_source(shared_server, "temp")
    send(shared_server, write_key, {"event": "Old News"}, {"event": "Old News"})
    hook = {
        "name": "temp-hook",
        "source": "temp",
        "type": "webhook",
        "settings": {"url": "http://127.0.0.1:9"},
    }
    with api(shared_server) as client:
        assert client.post("/destinations", json=hook).status_code == 201
        refused = client.delete("/sources/temp")
        assert refused.status_code == 400 and "'temp-hook'" in refused.json()["message"]
        assert client.delete("/destinations/temp-hook").status_code == 204
        assert client.delete("/sources/temp").status_code == 204

        assert track_status(shared_server, write_key) == 401
        assert "temp" not in [source["name"] for source in client.get("/sources").json()]
        assert client.get("/sources/temp").status_code == 404
        assert client.post("/sources", json={"name": "temp"}).status_code == 201
        assert client.get("/sources/temp/events").json() == []  # a new source, not the old one's log


def test_recent_events_and_failures_of_a_source_oldest_first_with_the_reason(shared_server):
    write_key = new_source(shared_server, "recent")
    send(shared_server, write_key, {"event": "First"}, {"event": "Second"}, {"event": "Third"})
    send(shared_server, write_key, {"event": "Nobody", "userId": None})
    with api(shared_server) as client:
        events = client.get("/sources/recent/events", params={"limit": 2}).json()
        assert [event["name"] for event in events] == ["Second", "Third"]
        assert events[1]["event"]["event"] == "Third" and events[1]["user"] == "u1"
        failures = client.get("/sources/recent/failures").json()
        assert [(f["code"], f["event"]["event"]) for f in failures] == [("no_user_anon_id", "Nobody")]
        assert "userId" in failures[0]["reason"]
        assert client.get("/sources/recent/events", params={"limit": 0}).status_code == 400
        assert client.get("/sources/recent/events", params={"limit": "x"}).json()["field"] == "limit"


def test_events_received_per_minute_are_counted_per_source_and_kept_up_to_date(shared_server):
    first, second = new_source(shared_server, "counted-1"), new_source(shared_server, "counted-2")
    send(shared_server, first, *[{"event": "Counted"}] * 5)
    send(shared_server, second, *[{"event": "Counted"}] * 2)

    def totals() -> dict[str, int]:
        with api(shared_server) as client:
            series = client.get("/metrics/events", params={"hours": 1}).json()
        assert series["until_minute"] - series["since_minute"] == 59
        return {
            source["name"]: source["total"]
            for source in series["sources"]
            if source["name"].startswith("counted")
        }

    assert totals() == {"counted-1": 5, "counted-2": 2}
    send(shared_server, second, *[{"event": "Counted"}] * 3)
    assert totals() == {"counted-1": 5, "counted-2": 5}  # only the tail was counted again
    with api(shared_server) as client:
        sources = client.get("/metrics/events").json()["sources"]
    minute, count = next(source["counts"][-1] for source in sources if source["name"] == "counted-2")
    assert abs(minute - time.time() // 60) <= 1 and count >= 1


def sse_messages(lines: Iterator[str], wanted: int, timeout: float) -> list[dict[str, Any]]:
    """The next `wanted` messages of an event stream (id, event, data), read for at most `timeout` s."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(messages) < wanted and time.monotonic() < deadline:
        line = next(lines)
        if not line:
            if "data" in current:
                messages.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(": ")
            current[key] = orjson.loads(value) if key == "data" else value
    return messages


def test_the_live_stream_sends_the_backlog_then_each_event_as_it_arrives_and_resumes(shared_server):
    write_key = new_source(shared_server, "streamed")
    send(shared_server, write_key, {"event": "Before"})
    headers = {"Authorization": f"Bearer {admin_token(shared_server)}"}
    url = f"{shared_server.url}/api/v1/sources/streamed/live"
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        backlog = sse_messages(lines, 1, 5)
        assert backlog[0]["event"] == "event" and backlog[0]["data"]["name"] == "Before"
        sender = threading.Timer(
            0.3,
            lambda: send(shared_server, write_key, {"event": "During"}, {"event": "Nobody", "userId": None}),
        )
        sender.start()
        started = time.monotonic()
        arrived = sse_messages(lines, 2, 5)
        assert time.monotonic() - started < 2.5
        sender.join()
    assert [(m["event"], m["data"].get("name") or m["data"]["code"]) for m in arrived] == [
        ("event", "During"),
        ("failure", "no_user_anon_id"),
    ]

    send(shared_server, write_key, {"event": "After"})
    resumed = {**headers, "Last-Event-ID": arrived[-1]["id"]}
    with httpx.stream("GET", url, headers=resumed, timeout=10) as response:
        after = sse_messages(response.iter_lines(), 1, 5)
    assert [m["data"]["name"] for m in after] == ["After"]  # no backlog again, nothing twice


def test_every_destination_type_gets_a_form_with_a_labelled_field_per_setting(shared_server):
    with api(shared_server) as client:
        catalog = client.get("/catalog").json()
    assert {entry["slug"] for entry in catalog} >= {"webhook", "amplitude", "slack"}
    with browser_session(shared_server, admin_token(shared_server)) as (browser, _):
        for entry in catalog:
            form = browser.get(f"/catalog/{entry['slug']}")
            assert form.status_code == 200, entry["slug"]
            for setting in entry["settings"]:
                field = f'id="setting-{setting["name"]}"'
                assert f'<label for="setting-{setting["name"]}"' in form.text and field in form.text
                if setting["secret"]:
                    assert re.search(rf'type="password" {field}', form.text), (entry["slug"], setting["name"])


def test_a_warehouses_tables_are_listed_with_their_row_counts_for_the_admin_only(shared_server):
    write_key = new_source(shared_server, "tabled")
    send(shared_server, write_key, {"event": "Order Completed"}, {"event": "Order Completed"})
    send(shared_server, write_key, {"event": "Signed Up"})
    tables_url = f"{shared_server.url}/api/v1/warehouses/default/tables"
    assert httpx.get(tables_url, timeout=10).status_code == 401
    wrong = httpx.get(tables_url, headers={"Authorization": "Bearer tya_wrong"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_token"
    with api(shared_server) as client:
        assert client.post("/warehouses/default/sync", timeout=60).json()["error"] is None
        tables = client.get("/warehouses/default/tables").json()
        assert [t for t in tables if t["schema"] == "tabled"] == [
            {"schema": "tabled", "table": "order_completed", "rows": 2},
            {"schema": "tabled", "table": "signed_up", "rows": 1},
            {"schema": "tabled", "table": "tracks", "rows": 3},
        ]
        assert client.get("/warehouses/nowhere/tables").status_code == 404
    with browser_session(shared_server, admin_token(shared_server)) as (browser, _):
        page = browser.get("/warehouses").text
    assert re.search(r"<td>tabled</td><th scope=\"row\">tracks</th><td class=\"num\">3</td>", page)
