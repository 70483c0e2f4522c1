"""The delivery engine's promises, through a real server and a local sink per test."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from tests.fakes import Captured, FakeVendor, ok_json

FAST_RETRIES = {"TRACKYARD_RETRY_BACKOFF_BASE_S": "0.05", "TRACKYARD_RETRY_BACKOFF_CAP_S": "0.5"}


def send(server, events: list[dict], write_key: str | None = None) -> None:
    response = httpx.post(
        f"{server.url}/v1/batch", auth=(write_key or server.write_key, ""), json={"batch": events}, timeout=10
    )
    assert response.status_code == 200, response.text


def tracks(count: int, prefix: str = "") -> list[dict]:
    prefix = prefix or uuid.uuid4().hex[:8]
    return [
        {"type": "track", "userId": f"u{i % 7}", "event": "Signed Up", "messageId": f"{prefix}-{i}"}
        for i in range(count)
    ]


def add_webhook(server, name: str, url: str, *settings: str) -> None:
    args = ["destination", "add", "default", "webhook", "--name", name, "--setting", f"url={url}"]
    for setting in settings:
        args += ["--setting", setting]
    server.cli(*args)
    time.sleep(1.5)  # the engine picks up configuration every second


def delivered_ids(vendor: FakeVendor, status: int = 200) -> list[str]:
    ids: list[str] = []
    for request in vendor.received():
        body = request.json()
        for event in body if isinstance(body, list) else [body]:
            ids.append(event["messageId"])
    return ids


class Script:
    """A handler that answers from a list of replies, then 200."""

    def __init__(self, *replies: tuple[int, dict[str, str], bytes]) -> None:
        self.replies = list(replies)
        self.lock = threading.Lock()

    def __call__(self, request: Captured) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            if self.replies:
                return self.replies.pop(0)
        return ok_json({"ok": True})


def status(server, name: str) -> dict:
    import orjson

    return orjson.loads(server.cli("destination", "status", name, "--json").stdout)


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_500_then_200_is_delivered_once(make_server):
    server = make_server(**FAST_RETRIES).start()
    with FakeVendor(Script((500, {}, b"boom"))) as vendor:
        add_webhook(server, "hook", vendor.url)
        events = tracks(1)
        send(server, events)
        vendor.wait_for(lambda reqs: len(reqs) >= 2)
        time.sleep(0.5)
        assert delivered_ids(vendor) == [events[0]["messageId"]] * 2  # the failed try, then the retry
        wait_until(lambda: status(server, "hook")["delivered"] == 1)
        current = status(server, "hook")
        assert current["failed"] == 0
        assert len(vendor.received()) == 2


def test_429_with_retry_after_waits_that_long(make_server):
    server = make_server(**FAST_RETRIES).start()
    with FakeVendor(Script((429, {"Retry-After": "2"}, b"slow down"))) as vendor:
        add_webhook(server, "hook", vendor.url)
        send(server, tracks(1))
        first, second = vendor.wait_for(lambda reqs: len(reqs) >= 2)[:2]
        assert second.received_at - first.received_at >= 1.9
        wait_until(lambda: status(server, "hook")["delivered"] == 1)


def test_400_goes_to_dead_letters_with_the_response_body_and_can_be_retried(make_server):
    server = make_server(**FAST_RETRIES).start()
    reply = (400, {"Content-Type": "application/json"}, b'{"error":"field x is invalid"}')
    with FakeVendor(Script(reply, reply)) as vendor:
        add_webhook(server, "hook", vendor.url, "shared_secret=topsecret-value")
        events = tracks(2)
        send(server, events)
        wait_until(lambda: status(server, "hook")["dead_letters"] == 2)
        wait_until(lambda: status(server, "hook")["failed"] == 2)
        current = status(server, "hook")
        assert current["delivered"] == 0
        assert "field x is invalid" in current["last_errors"][0]["response"]
        assert len(vendor.received()) == 2  # a 400 is never retried by itself
        assert "topsecret-value" not in server.cli("destination", "status", "hook").stdout
        assert "topsecret-value" not in server.cli("destination", "list", "--json").stdout
        assert "topsecret-value" not in server.log_path.read_text()

        output = server.cli("destination", "retry", "hook").stdout
        assert "2 dead letters" in output
        wait_until(lambda: status(server, "hook")["dead_letters"] == 0)
        wait_until(lambda: status(server, "hook")["delivered"] == 2)
        assert sorted(delivered_ids(vendor)[2:]) == sorted(e["messageId"] for e in events)


def test_timeouts_are_retried(make_server):
    server = make_server(**FAST_RETRIES).start()
    calls = {"n": 0}

    def slow_first(request: Captured):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(1.5)
        return ok_json({"ok": True})

    with FakeVendor(slow_first) as vendor:
        add_webhook(server, "hook", vendor.url, "timeout=0.5")
        events = tracks(1)
        send(server, events)
        wait_until(lambda: status(server, "hook")["delivered"] == 1)
        assert len(vendor.received()) >= 2
        attempts = status(server, "hook")
        assert attempts["failed"] == 0


def test_a_failing_destination_does_not_hold_up_a_healthy_one(make_server):
    server = make_server(**FAST_RETRIES).start()
    with (
        FakeVendor(lambda r: (503, {}, b"down")) as broken,
        FakeVendor() as healthy,
    ):
        add_webhook(server, "broken", broken.url)
        add_webhook(server, "healthy", healthy.url, "batch_size=50")
        events = tracks(300)
        for start in range(0, 300, 50):
            send(server, events[start : start + 50])
        healthy.wait_for(lambda reqs: len(delivered_ids(healthy)) >= 300)
        assert sorted(delivered_ids(healthy)) == sorted(e["messageId"] for e in events)
        assert len(broken.received()) > 0
        wait_until(lambda: status(server, "broken")["retrying"] > 0)
        assert status(server, "broken")["delivered"] == 0
        assert status(server, "healthy")["failed"] == 0


def test_events_keep_flowing_after_sigkill_mid_delivery(make_server):
    server = make_server(**FAST_RETRIES).start()
    with FakeVendor(lambda r: (time.sleep(0.02), ok_json({"ok": True}))[1]) as vendor:
        add_webhook(server, "hook", vendor.url, "concurrency=4")
        events = tracks(600)
        for start in range(0, 600, 100):
            send(server, events[start : start + 100])
        vendor.wait_for(lambda reqs: len(reqs) >= 50)
        server.kill()
        server.start()
        expected = {e["messageId"] for e in events}
        vendor.wait_for(lambda reqs: expected <= set(delivered_ids(vendor)), timeout=60)
        duplicates = len(delivered_ids(vendor)) - len(expected)
        # at most the 4 requests in flight plus what settled in one 0.2 s position-save
        # interval: 4 slots x 0.2 s / 20 ms per request = 40 events
        assert duplicates <= 4 + 40


def test_destination_added_later_starts_at_the_end_of_the_log(server):
    send(server, tracks(5, "before"))
    with FakeVendor() as vendor:
        add_webhook(server, "hook", vendor.url)
        later = tracks(3, "after")
        send(server, later)
        vendor.wait_for(lambda reqs: len(reqs) >= 3)
        time.sleep(0.5)
        assert sorted(delivered_ids(vendor)) == sorted(e["messageId"] for e in later)


def test_integrations_object_and_disable_switch_route_events(server):
    with FakeVendor() as vendor:
        add_webhook(server, "hook", vendor.url)
        send(
            server,
            [
                {
                    "type": "track",
                    "userId": "a",
                    "event": "x",
                    "messageId": "skip-all",
                    "integrations": {"All": False},
                },
                {
                    "type": "track",
                    "userId": "a",
                    "event": "x",
                    "messageId": "named",
                    "integrations": {"All": False, "Webhooks": True},
                },
                {
                    "type": "track",
                    "userId": "a",
                    "event": "x",
                    "messageId": "off",
                    "integrations": {"Webhooks": False},
                },
                {
                    "type": "track",
                    "userId": "a",
                    "event": "x",
                    "messageId": "bundled",
                    "_metadata": {"bundled": ["Webhooks"]},
                },
                {"type": "track", "userId": "a", "event": "x", "messageId": "plain"},
            ],
        )
        vendor.wait_for(lambda reqs: len(reqs) >= 2)
        wait_until(lambda: status(server, "hook")["filtered"] == 3)
        assert sorted(delivered_ids(vendor)) == ["named", "plain"]

        server.cli("destination", "disable", "hook")
        time.sleep(1.5)
        send(server, tracks(3, "while-off"))
        time.sleep(1.5)
        assert sorted(delivered_ids(vendor)) == ["named", "plain"]


def test_event_filters_from_the_command_line(server):
    with FakeVendor() as vendor:
        server.cli(
            "destination",
            "add",
            "default",
            "webhook",
            "--name",
            "orders",
            "--setting",
            f"url={vendor.url}",
            "--allow-type",
            "track",
            "--block-event",
            "Debug",
        )
        time.sleep(1.5)
        send(
            server,
            [
                {"type": "track", "userId": "a", "event": "Order Completed", "messageId": "keep"},
                {"type": "track", "userId": "a", "event": "Debug", "messageId": "blocked"},
                {"type": "identify", "userId": "a", "messageId": "not-a-track"},
            ],
        )
        wait_until(lambda: status(server, "orders")["filtered"] == 2)
        assert delivered_ids(vendor) == ["keep"]


@pytest.mark.parametrize("setting", ["url=", "batch_size=many", "nonsense=1", "url=ftp://x"])
def test_invalid_settings_are_refused_with_the_setting_named(server, setting):
    url = [] if setting.startswith("url=") else ["--setting", "url=http://127.0.0.1:9/"]
    result = server.cli(
        "destination", "add", "default", "webhook", "--name", "bad", *url, "--setting", setting, check=False
    )
    assert result.returncode == 2
    name = setting.split("=")[0]
    assert name in result.stderr


def test_delivery_on_postgres_with_a_retry_and_a_dead_letter(make_server, pg_url):
    server = make_server(database_url=pg_url, **FAST_RETRIES).start()
    bad = (400, {"Content-Type": "application/json"}, b'{"error":"no"}')
    with FakeVendor(Script((500, {}, b"boom"), bad)) as vendor:
        add_webhook(server, "hook", vendor.url)
        events = tracks(5)
        send(server, events)
        wait_until(lambda: status(server, "hook")["delivered"] == 4)
        wait_until(lambda: status(server, "hook")["dead_letters"] == 1)
        assert set(delivered_ids(vendor)) == {e["messageId"] for e in events}
