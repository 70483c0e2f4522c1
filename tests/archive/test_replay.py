"""Replay's promises, through real `trackyard` processes and a local sink.

History is written through the store with chosen receivedAt times (days ago), archived,
and the log's early segments dropped, so that every replay reads both the archive and
the log.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from tests.archive.helpers import (
    HOUR_MS,
    Made,
    archive_all,
    delivered,
    fill,
    history_start,
    json_lines,
    trackyard,
    wait_until,
)
from tests.conftest import TRACKYARD, server_env
from tests.fakes import Captured, FakeVendor, ok_json
from trackyard.archive.retention import RetentionPolicy, drop_expired_segments
from trackyard.spec import format_ms, now_ms
from trackyard.store import Store
from trackyard.store.archive import ARCHIVE_CONSUMER
from trackyard.store.sqlite import SQLiteStore

FAST_RETRIES = {"TRACKYARD_RETRY_BACKOFF_BASE_S": "0.05", "TRACKYARD_RETRY_BACKOFF_CAP_S": "0.3"}
REPLAYED = {"All": False, "Webhooks": True}


@dataclass
class History:
    data_dir: Path
    store: Store
    made: list[Made]
    web: int
    app: int
    start: int

    def expected(
        self, source_id: int | None = None, since: int | None = None, until: int | None = None
    ) -> list[str]:
        source_id = self.web if source_id is None else source_id
        return [
            m.message_id
            for m in self.made
            if m.source_id == source_id
            and (since is None or m.received_ms >= since)
            and (until is None or m.received_ms <= until)
        ]

    def add_webhook(self, url: str, **settings: object) -> None:
        self.store.create_destination(self.web, "webhook", "hook", {"url": url, **settings})


def make_history(
    tmp_path: Path, archived: int, logged: int, step_ms: int = 4000, segment_rows: int = 2000
) -> History:
    """`archived` events in the archive (mostly dropped from the log), then `logged` more in
    the log only; sources web, web, app taking turns."""
    data_dir = tmp_path / "data"
    store = SQLiteStore(data_dir / "trackyard.db", segment_rows=segment_rows)
    store.migrate()
    web, app = store.create_source("default", "wk-web").id, store.create_source("app", "wk-app").id
    start = history_start()
    made = fill(store, [web, web, app], archived, start, step_ms, batch_size=500)
    archive_all(store, data_dir / "archive", checkpoint_events=max(1000, archived // 7))
    drop_expired_segments(store, RetentionPolicy(hours=0, keep_segments=1), now_ms())
    made += fill(
        store, [web, web, app], logged, start + archived * step_ms, step_ms, prefix="l", batch_size=500
    )
    return History(data_dir, store, made, web, app, start)


def replay(history: History, *args: str, check: bool = True, **env: str) -> dict:
    result = trackyard(
        history.data_dir, "replay", "--destination", "hook", "--json", *args, check=check, **env
    )
    return json_lines(result.stdout)[-1]


def test_a_sub_range_is_delivered_exactly_in_order_across_files_and_the_log_boundary(tmp_path: Path):
    history = make_history(tmp_path, archived=40_000, logged=10_000)
    store = history.store
    since = history.start + 30_000 * 4000 + 1500  # in the archive only: the log dropped it
    until = history.start + 45_000 * 4000 - 1500  # in the log only: not archived yet
    archived_upto = store.get_position(ARCHIVE_CONSUMER)
    assert store.segments()[0].first_seq > 30_000 and archived_upto == 40_000
    assert len(store.archive_files(history.web, limit=1000)) > 20
    expected = history.expected(since=since, until=until)
    originals = {m.message_id: m for m in history.made}

    with FakeVendor() as vendor:
        history.add_webhook(vendor.url, batch_size=500, concurrency=1)
        summary = replay(history, "--since", format_ms(since), "--until", format_ms(until))
        events = delivered(vendor)

    assert [e["messageId"] for e in events] == expected  # in order, none twice, none missing
    assert all(e["integrations"] == REPLAYED for e in events)
    for event in events[:: len(events) // 50]:
        made = originals[event["messageId"]]
        assert event["receivedAt"] == format_ms(made.received_ms)
        assert event["timestamp"] == format_ms(made.received_ms - 50)
    assert summary["state"] == "done"
    assert (
        summary["read"],
        summary["sent"],
        summary["delivered"],
        summary["failed"],
        summary["filtered"],
    ) == (
        len(expected),
        len(expected),
        len(expected),
        0,
        0,
    )
    assert store.get_position("replay:1") is None  # a finished replay no longer holds the log


def test_filters_by_source_event_name_and_type(tmp_path: Path):
    history = make_history(tmp_path, archived=2000, logged=1000, segment_rows=500)
    by_id = {m.message_id: m for m in history.made}
    with FakeVendor() as vendor:
        history.add_webhook(vendor.url, batch_size=100, concurrency=1)
        summary = replay(history, "--event", "Signed Up", "Order Completed")
        names = [e["messageId"] for e in delivered(vendor)]
        assert names == [i for i in history.expected() if by_id[i].name in ("Signed Up", "Order Completed")]
        assert summary["filtered"] == len(history.expected()) - len(names)
        assert summary["read"] == summary["sent"] + summary["filtered"]

        vendor.requests.clear()
        summary = replay(history, "--source", "app", "--type", "identify", "page")
        types = [e["messageId"] for e in delivered(vendor)]
        assert types == [i for i in history.expected(history.app) if by_id[i].type in ("identify", "page")]
        assert summary["delivered"] == len(types)
        assert all(by_id[i].source_id == history.app for i in types)


def test_a_dry_run_counts_per_event_name_shows_redacted_requests_and_sends_nothing(tmp_path: Path):
    history = make_history(tmp_path, archived=1500, logged=500, segment_rows=500)
    with FakeVendor() as vendor:
        history.add_webhook(vendor.url, batch_size=10, shared_secret="s3cr3t-value")
        since = history.start + 1000 * 4000
        result = replay(history, "--dry-run", "--since", format_ms(since))
        time.sleep(0.5)
        assert vendor.received() == []
    expected = history.expected(since=since)
    by_id = {m.message_id: m for m in history.made}
    assert result["read"] == result["sent"] == len(expected)
    assert result["events"] == dict(Counter(by_id[i].name for i in expected))
    assert len(result["requests"]) == 3
    first = result["requests"][0]
    assert first.startswith("POST ") and expected[0] in first
    assert "s3cr3t-value" not in orjson.dumps(result).decode()
    listing = trackyard(history.data_dir, "replay", "list", "--json").stdout
    assert listing.strip() == ""  # a dry run creates no job


def test_a_replay_killed_mid_way_is_completed_by_a_server_with_no_gap(tmp_path: Path, make_server):
    history = make_history(tmp_path, archived=4000, logged=2000, segment_rows=1000)
    expected = history.expected()
    slow = lambda request: (time.sleep(0.05), ok_json({"ok": True}))[1]  # noqa: E731
    with FakeVendor(slow) as vendor:
        history.add_webhook(vendor.url, batch_size=50, concurrency=2)
        env = server_env(history.data_dir, TRACKYARD_REPLAY_LEASE_S="2")
        running = subprocess.Popen(
            [TRACKYARD, "replay", "--destination", "hook"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            vendor.wait_for(lambda requests: len(requests) >= 15)
        finally:
            running.send_signal(signal.SIGKILL)
            running.wait(10)
        interrupted = len(delivered(vendor))
        assert 0 < interrupted < len(expected)

        make_server(data_dir=history.data_dir, TRACKYARD_REPLAY_LEASE_S="2").start()
        wait_until(
            lambda: _job(history)["state"] == "done", timeout=60, what="the server finishing the replay"
        )
        ids = [e["messageId"] for e in delivered(vendor)]

    assert set(ids) == set(expected)
    # copies: requests in flight at the kill, and what settled within one 0.2 s save
    # interval: 2 slots x 0.2 s / 50 ms per request x 50 events = 400, plus 2 x 50 in flight
    assert len(ids) - len(expected) <= 500
    job = _job(history)
    assert (job["read"], job["delivered"], job["failed"]) == (len(expected), len(expected), 0)


def _job(history: History) -> dict:
    return json_lines(trackyard(history.data_dir, "replay", "list", "--json").stdout)[0]


def test_a_failing_destination_retries_then_dead_letters_and_loses_nothing(tmp_path: Path):
    history = make_history(tmp_path, archived=300, logged=150, segment_rows=100)
    expected = history.expected()
    rejected = set(expected[3::10])
    flaky = set(expected[5::10])
    lock = threading.Lock()

    def handler(request: Captured):
        message_id = request.json()["messageId"]
        if message_id in rejected:
            return 400, {"Content-Type": "application/json"}, b'{"error":"bad event"}'
        with lock:
            if message_id in flaky:
                flaky.discard(message_id)
                return 503, {}, b"try later"
        return ok_json({"ok": True})

    with FakeVendor(handler) as vendor:
        history.add_webhook(vendor.url)
        result = trackyard(
            history.data_dir, "replay", "--destination", "hook", "--json", check=False, **FAST_RETRIES
        )
        attempts = Counter(request.json()["messageId"] for request in vendor.received())
    summary = json_lines(result.stdout)[-1]
    assert result.returncode == 1  # done, but some events could not be delivered
    assert summary["state"] == "done"
    assert (summary["delivered"], summary["failed"]) == (len(expected) - len(rejected), len(rejected))
    assert all(attempts[i] == 2 for i in expected[5::10])  # retried once after the 503
    assert all(attempts[i] == 1 for i in rejected)  # a 400 is not retried
    destination = history.store.get_destination("hook")
    letters = history.store.dead_letters(destination.id)
    assert {letter.message_id for letter in letters} == rejected
    assert all("bad event" in letter.response for letter in letters)


def test_live_events_keep_flowing_during_a_replay_and_the_destination_gets_both(tmp_path: Path, make_server):
    history = make_history(tmp_path, archived=2000, logged=1000, segment_rows=500)
    server = make_server(data_dir=history.data_dir).start()
    with FakeVendor() as vendor:
        settings = [f"url={vendor.url}", "batch_size=50", "concurrency=1"]
        server.cli("destination", "add", "default", "webhook", "--name", "hook", *_settings(settings))
        time.sleep(1.5)  # the engine picks up configuration every second
        created = json_lines(
            server.cli("replay", "--destination", "hook", "--rate", "1500", "--detach", "--json").stdout
        )
        assert created[-1]["state"] == "pending"
        live = [f"live-{i}" for i in range(300)]
        for start in range(0, 300, 30):
            batch = [
                {"type": "track", "userId": "u", "event": "Live", "messageId": i}
                for i in live[start : start + 30]
            ]
            response = httpx.post(
                f"{server.url}/v1/batch", auth=("wk-web", ""), json={"batch": batch}, timeout=10
            )
            assert response.status_code == 200
            time.sleep(0.1)
        wait_until(lambda: _job(history)["state"] == "done", timeout=60, what="the server running the replay")
        wait_until(
            lambda: len(delivered(vendor)) >= len(history.expected()) + len(live), what="both deliveries"
        )
        time.sleep(0.5)
        events = delivered(vendor)

    replayed = [e["messageId"] for e in events if e.get("integrations") == REPLAYED]
    current = [e["messageId"] for e in events if e.get("integrations") != REPLAYED]
    assert replayed == history.expected()
    assert sorted(current) == sorted(live)


def _settings(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--setting", pair)]


def test_a_running_replay_stops_when_cancelled(tmp_path: Path):
    history = make_history(tmp_path, archived=1000, logged=0, segment_rows=500)
    with FakeVendor() as vendor:
        history.add_webhook(vendor.url)
        env = server_env(history.data_dir, TRACKYARD_REPLAY_LEASE_S="1.5")
        running = subprocess.Popen(
            [TRACKYARD, "replay", "--destination", "hook", "--rate", "50", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        vendor.wait_for(lambda requests: len(requests) >= 5)
        trackyard(history.data_dir, "replay", "cancel", "1")
        output, _ = running.communicate(timeout=30)
        sent = len(vendor.received())
        time.sleep(1.0)
        assert len(vendor.received()) == sent  # nothing more after it stopped
    assert running.returncode == 1
    summary = json_lines(output)[-1]
    assert summary["state"] == "cancelled" and summary["read"] < len(history.expected())
    assert history.store.get_position("replay:1") is None


def test_adding_a_destination_with_replay_since_backfills_it_on_postgres(tmp_path: Path, pg_url: str):
    from trackyard.store.postgres import PostgresStore

    data_dir = tmp_path / "data"
    store = PostgresStore(pg_url, segment_rows=300)
    store.migrate()
    web = store.create_source("default", "wk-web").id
    start = history_start()
    made = fill(store, [web], 1200, start, 60_000, batch_size=100)
    archive_all(store, data_dir / "archive", checkpoint_events=400)
    drop_expired_segments(store, RetentionPolicy(hours=0, keep_segments=1), now_ms())
    made += fill(store, [web], 300, start + 1200 * 60_000, 60_000, prefix="l", batch_size=100)
    assert store.segments()[0].first_seq > 1
    since = start + 5 * HOUR_MS + 30_000
    with FakeVendor() as vendor:
        result = trackyard(
            data_dir,
            "destination",
            "add",
            "default",
            "webhook",
            "--name",
            "hook",
            "--setting",
            f"url={vendor.url}",
            "--setting",
            "batch_size=100",
            "--setting",
            "concurrency=1",
            "--replay-since",
            format_ms(since),
            TRACKYARD_DATABASE_URL=pg_url,
        )
        ids = [e["messageId"] for e in delivered(vendor)]
    assert "added" in result.stdout
    assert ids == [m.message_id for m in made if m.received_ms >= since]
    store.close()


def test_an_interrupted_replay_resumes_in_the_foreground_without_a_gap(tmp_path: Path):
    history = make_history(tmp_path, archived=1500, logged=500, segment_rows=500)
    expected = history.expected()
    with FakeVendor() as vendor:
        history.add_webhook(vendor.url, batch_size=10, concurrency=1)
        running = subprocess.Popen(
            [TRACKYARD, "replay", "--destination", "hook", "--rate", "300"],
            env=server_env(history.data_dir),
            stdout=subprocess.PIPE,
            text=True,
        )
        vendor.wait_for(lambda requests: len(requests) >= 10)
        running.send_signal(signal.SIGINT)
        output, _ = running.communicate(timeout=30)
        assert running.returncode == 130 and "trackyard replay resume 1" in output
        assert _job(history)["state"] == "running"  # left for a server, or for resume

        summary = json_lines(trackyard(history.data_dir, "replay", "resume", "1", "--json").stdout)[-1]
        ids = [e["messageId"] for e in delivered(vendor)]
    assert summary["state"] == "done" and summary["delivered"] == len(expected)
    # duplicates: at most the request in flight (10) plus what settled after the last cursor
    # save, which happens every 0.2 s (60 events at 300/s) should the final save be cut short
    assert set(ids) == set(expected) and len(ids) - len(expected) <= 10 + 60
