"""The 200 is sent only after the events are committed; a store that cannot commit gets 503.

SDKs drop what was answered 200 and resend what was not (contract §1.8, sdk-wire-facts
"At-least-once"), so a 200 for an uncommitted event loses it for good.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import httpx
import orjson

from tests.conftest import Server
from tests.ingest.helpers import assert_success, failed, new_id, post, stored_ids, track

CLIENTS = 4
BATCH = 25
MAX_REQUESTS_PER_CLIENT = 2_000
ACKS_BEFORE_KILL = 40


def test_every_message_answered_200_survives_a_sigkill(server: Server) -> None:
    key = server.write_key
    acked: list[list[str]] = []
    unacked: list[list[str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        with httpx.Client(base_url=server.url, auth=(key, ""), timeout=5) as http:
            for request in range(MAX_REQUESTS_PER_CLIENT):
                if stop.is_set():
                    return
                ids = [f"c{number}-{request}-{item}-{uuid.uuid4().hex[:8]}" for item in range(BATCH)]
                body = orjson.dumps({"batch": [track(message_id) for message_id in ids]})
                try:
                    response = http.post("/v1/batch", content=body)
                    ok = response.status_code == 200 and response.json() == {"success": True}
                except httpx.HTTPError:
                    ok = False
                with lock:
                    (acked if ok else unacked).append(ids)
                if not ok:
                    return  # an SDK backs off here; its retry comes after the restart

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= ACKS_BEFORE_KILL:
                break
        time.sleep(0.005)
    server.kill()  # SIGKILL while the clients are sending: commits are in flight
    for thread in threads:  # each client stops at its first unanswered request
        thread.join(timeout=15)
    stop.set()
    assert not any(thread.is_alive() for thread in threads)

    assert len(acked) >= ACKS_BEFORE_KILL
    assert unacked, "the kill did not interrupt the clients"
    server.start()  # same data directory, same port
    counts = Counter(stored_ids(server))
    sent = {message_id for ids in acked + unacked for message_id in ids}
    missing = [m for ids in acked for m in ids if counts[m] != 1]
    assert not missing, f"{len(missing)} messages answered 200 are not in the log exactly once"
    assert set(counts) <= sent
    assert max(counts.values()) == 1

    # The clients retry what was not answered 200; afterwards every message is there once.
    for ids in unacked:
        assert_success(post(server, "/v1/batch", {"batch": [track(m) for m in ids]}, key=key))
    counts = Counter(stored_ids(server))
    assert set(counts) == sent
    assert set(counts.values()) == {1}


def test_a_store_that_cannot_commit_answers_503_never_200_and_recovers(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(TRACKYARD_SQLITE_BUSY_TIMEOUT_MS="300").start()
    key = server.write_key
    refused = [new_id("refused") for _ in range(3)]
    refused_batch = {"batch": [*(track(m) for m in refused), {"type": "track", "event": "no ids"}]}
    single = new_id("refused-single")
    origin = {"origin": "https://shop.example"}
    # Hold SQLite's write lock from outside, as a stuck backup or a long migration would.
    locker = sqlite3.connect(server.data_dir / "trackyard.db", isolation_level=None, timeout=1)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        # The store waits out its busy timeout (0.3 s here), then gives up.
        for path, body in [("/v1/batch", refused_batch), ("/v1/t", {**track(single), "writeKey": key})]:
            response = post(server, path, body, key=key, headers=origin, timeout=60)
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "store_unavailable"
            assert response.json()["message"]
            assert int(response.headers["retry-after"]) > 0
            assert response.headers["access-control-allow-origin"] == "https://shop.example"
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    accepted = new_id("accepted")
    assert_success(post(server, "/v1/batch", {"batch": [track(accepted)]}, key=key))
    assert stored_ids(server) == [accepted]  # nothing of the refused requests was stored...
    assert failed(server) == []  # ...not even its invalid event

    # The SDK's retry of the refused request is accepted, and stored exactly once.
    assert_success(post(server, "/v1/batch", refused_batch, key=key))
    assert_success(post(server, "/v1/batch", refused_batch, key=key))
    assert stored_ids(server) == [accepted, *refused]
    assert [failure["code"] for failure in failed(server)] == ["no_user_anon_id"] * 2
