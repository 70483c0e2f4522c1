"""PostgreSQL restarted under load: 503 with Retry-After while it is down, recovery without
restarting trackyard, nothing acknowledged lost, nothing stored twice (issue #7).

The server is a private one (tests/scale/conftest.py): the shared cluster serves other tests.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg
from psycopg import sql

from tests.fakes import FakeVendor
from tests.scale.conftest import PrivatePostgres

SENDERS = 2
BATCH = 50
DOWN_S = 4.0
RECOVERY_BOUND_S = 20.0
RESEND_PAUSE_S = 0.1  # shorter than Retry-After on purpose: the test samples the outage densely
FAST = {
    "TRACKYARD_LEASE_TTL_S": "3",
    "TRACKYARD_RETRY_BACKOFF_BASE_S": "0.05",
    "TRACKYARD_RETRY_BACKOFF_CAP_S": "0.5",
    "TRACKYARD_DEFAULT_WAREHOUSE": "off",
}


@dataclass
class Answer:
    started: float
    finished: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    retry_after: str | None


@dataclass
class LoadGenerator:
    """Threads sending batches with known messageIds, re-sending a batch until it is acknowledged,
    as the SDKs do; bounded by `deadline`."""

    url: str
    write_key: str
    deadline: float
    answers: list[Answer] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, sender: int) -> None:
        with httpx.Client(base_url=self.url, auth=(self.write_key, ""), timeout=10) as client:
            number = 0
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                ids = [f"{sender}-{number}-{i}-{uuid.uuid4().hex[:8]}" for i in range(BATCH)]
                number += 1
                self._send_until_acknowledged(client, ids)

    def _send_until_acknowledged(self, client: httpx.Client, ids: list[str]) -> None:
        batch = [
            {"type": "track", "event": "Tick", "userId": f"u-{i}", "messageId": m} for i, m in enumerate(ids)
        ]
        with self._lock:
            self.sent.update(ids)
        while time.monotonic() < self.deadline:
            started = time.monotonic()
            try:
                response = client.post("/v1/batch", json={"batch": batch})
                status, retry_after = response.status_code, response.headers.get("retry-after")
            except httpx.HTTPError:
                status, retry_after = 0, None
            with self._lock:
                self.answers.append(Answer(started, time.monotonic(), status, retry_after))
                if status == 200:
                    self.acknowledged.update(ids)
            if status == 200 or self.stop.is_set():
                return
            time.sleep(RESEND_PAUSE_S)

    def answers_between(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.started >= start and a.finished <= end]

    def first_success_after(self, moment: float) -> float | None:
        with self._lock:
            return min(
                (a.finished for a in self.answers if a.started >= moment and a.status == 200), default=None
            )


def logged_message_ids(url: str) -> Counter[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [row[0] for row in conn.execute("SELECT id FROM log_segments ORDER BY id").fetchall()]
        counts: Counter[str] = Counter()
        for segment_id in tables:
            query = sql.SQL("SELECT message_id FROM {}").format(sql.Identifier(f"log_{segment_id:06d}"))
            counts.update(row[0] for row in conn.execute(query).fetchall())
        return counts


def delivered_ids(vendor: FakeVendor) -> set[str]:
    ids: set[str] = set()
    for request in vendor.received():
        body = request.json()
        ids.update(event["messageId"] for event in (body if isinstance(body, list) else [body]))
    return ids


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not reached in {timeout} s")


def test_postgres_restart_under_load_answers_503_then_recovers_without_loss(
    make_server, private_postgres: PrivatePostgres, tmp_path
):
    server = make_server(database_url=private_postgres.url, data_dir=tmp_path / "serve", **FAST).start()
    with FakeVendor() as vendor:
        server.cli(
            "destination", "add", "default", "webhook", "--name", "hook",
            "--setting", f"url={vendor.url}", "--setting", "batch_size=100",
        )  # fmt: skip
        load = LoadGenerator(server.url, server.write_key, deadline=time.monotonic() + 90)
        senders = [threading.Thread(target=load.run, args=(n,)) for n in range(SENDERS)]
        for thread in senders:
            thread.start()
        try:
            time.sleep(2)
            private_postgres.stop()
            down_from = time.monotonic()
            time.sleep(DOWN_S)
            health_while_down = httpx.get(f"{server.url}/health", timeout=10)
            down_until = time.monotonic()
            private_postgres.start()
            wait_for(
                lambda: load.first_success_after(down_until) is not None, RECOVERY_BOUND_S, "a 200 again"
            )
            recovered_s = (load.first_success_after(down_until) or down_until) - down_until
            time.sleep(2)  # more load on the recovered connection
        finally:
            load.stop.set()
            for thread in senders:
                thread.join(30)

        assert server.process is not None and server.process.poll() is None, "trackyard kept running"
        during = load.answers_between(down_from, down_until)
        assert during, "requests were answered while PostgreSQL was down"
        assert {a.status for a in during} == {503}, Counter(a.status for a in during)
        assert all(a.retry_after and int(a.retry_after) > 0 for a in during)
        print(f"\n{len(during)} answers 503 while down; a 200 {recovered_s:.2f} s after starting it again")
        assert {a.status for a in load.answers} <= {200, 503}, Counter(a.status for a in load.answers)
        assert health_while_down.status_code in (200, 503), health_while_down.text
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200

        logged = logged_message_ids(private_postgres.url)
        assert load.acknowledged <= set(logged), f"{len(load.acknowledged - set(logged))} acknowledged lost"
        assert set(logged) <= load.sent
        assert max(logged.values()) == 1, [m for m, n in logged.items() if n > 1][:10]
        wait_for(lambda: delivered_ids(vendor) >= set(logged), 60, "the destination caught up")
