"""The two moving parts of the chaos test: a paced load generator that behaves like an SDK
behind a load balancer, and a seeded chaos schedule of process kills and connection cuts."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import orjson
import psycopg

from tests.conftest import Server

BATCH = 100
MAX_ATTEMPTS = 8  # like an SDK's retry budget; after that the batch is recorded as not acknowledged
REQUEST_TIMEOUT_S = 10.0
RECONNECT_S = 10.0


def message_id(run: str, index: int) -> str:
    return f"{run}-{index:06d}"


def batch_body(run: str, first: int, count: int) -> bytes:
    """`count` track events with known messageIds; users spread over the partitions."""
    return orjson.dumps(
        {
            "batch": [
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": f"user-{i % 997}",
                    "messageId": message_id(run, i),
                    "properties": {"revenue": i % 100, "sku": f"sku-{i % 13}"},
                }
                for i in range(first, first + count)
            ]
        }
    )


@dataclass
class LoadReport:
    acked: set[int] = field(default_factory=set)  # indexes of batches answered 200
    given_up: set[int] = field(default_factory=set)
    retries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # non-200 answers and errors seen

    def note(self, what: str) -> None:
        self.statuses[what] = self.statuses.get(what, 0) + 1


class LoadGenerator:
    """Sends `events` in /v1/batch requests of BATCH, paced over `duration_s`, on `threads`
    threads. A batch goes to the ingest processes in turn (a round-robin load balancer);
    a non-200 answer or a connection error is retried with the same messageIds on the next
    ingest process, with backoff, at most MAX_ATTEMPTS times. The ingest processes are read
    at every attempt, so a restarted one is found on its new port."""

    def __init__(
        self,
        ingests: Sequence[Server],
        write_key: str,
        run: str,
        events: int,
        duration_s: float,
        threads: int,
    ) -> None:
        self.ingests = ingests
        self.auth = (write_key, "")
        self.run = run
        self.batches = events // BATCH
        self.interval_s = duration_s / self.batches
        self.threads = threads
        self.report = LoadReport()
        self._next = itertools.count()
        self._lock = threading.Lock()

    def acked_ids(self) -> set[str]:
        return {message_id(self.run, b * BATCH + i) for b in self.report.acked for i in range(BATCH)}

    def sent_ids(self) -> set[str]:
        return {message_id(self.run, i) for i in range(self.batches * BATCH)}

    def send_all(self) -> None:
        started = time.monotonic()
        workers = [
            threading.Thread(target=self._worker, args=(started,), name=f"load-{n}")
            for n in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def _worker(self, started: float) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            while (index := next(self._next)) < self.batches:
                delay = started + index * self.interval_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                acked = self._send(client, index, batch_body(self.run, index * BATCH, BATCH))
                with self._lock:
                    (self.report.acked if acked else self.report.given_up).add(index)

    def _send(self, client: httpx.Client, index: int, body: bytes) -> bool:
        for attempt in range(MAX_ATTEMPTS):
            ingest = self.ingests[(index + attempt) % len(self.ingests)]
            try:
                response = client.post(
                    f"{ingest.url}/v1/batch",
                    content=body,
                    auth=self.auth,
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code == 200:
                    return True
                outcome = str(response.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            with self._lock:
                self.report.retries += 1
                self.report.note(outcome)
            time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))
        return False


@dataclass
class Fault:
    at_s: float
    kind: str  # "worker", "ingest" or "cut"


@dataclass
class ChaosLog:
    done: list[tuple[str, str]] = field(default_factory=list)  # (kind, what happened when)
    worker_kills: int = 0
    worker_cuts: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for done, _ in self.done if done == kind)


class Chaos:
    """At seeded random moments within [start_s, end_s] of the run: SIGKILL and restart a worker,
    SIGKILL and restart an ingest process, or cut every PostgreSQL connection of one process
    (`pg_terminate_backend` of the backends named `trackyard-<pid>` and
    `trackyard-warehouse-<pid>`). `each` of every kind at least, plus `extra` drawn at random;
    one fault per time slot, so faults never overlap."""

    KINDS = ("worker", "ingest", "cut")

    def __init__(
        self,
        rng: random.Random,
        workers: list[Server],
        ingests: list[Server],
        admin_url: str,
        window: tuple[float, float],
        each: int = 2,
        extra: int = 2,
    ) -> None:
        self.rng = rng
        self.workers = workers
        self.ingests = ingests
        self.admin_url = admin_url
        kinds = [kind for kind in self.KINDS for _ in range(each)]
        kinds += [rng.choice(self.KINDS) for _ in range(extra)]
        rng.shuffle(kinds)
        slot = (window[1] - window[0]) / len(kinds)
        self.schedule = [
            Fault(window[0] + n * slot + rng.uniform(0.1, 0.8) * slot, kind) for n, kind in enumerate(kinds)
        ]
        self.log = ChaosLog()
        self.error: BaseException | None = None
        self.last_fault_at = 0.0  # time.monotonic() when the last fault began

    def run(self, started: float) -> None:
        try:
            for fault in self.schedule:
                delay = started + fault.at_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.last_fault_at = time.monotonic()
                self._apply(fault, self.last_fault_at - started)
        except BaseException as exc:  # reported by the test, which owns the assertion
            self.error = exc

    def _apply(self, fault: Fault, at_s: float) -> None:
        actions: dict[str, Callable[[], str]] = {
            "worker": lambda: self._restart(self.rng.choice(self.workers), "worker"),
            "ingest": lambda: self._restart(self.rng.choice(self.ingests), "ingest"),
            "cut": self._cut,
        }
        self.log.done.append((fault.kind, f"{at_s:5.1f}s {actions[fault.kind]()}"))

    def _restart(self, server: Server, role: str) -> str:
        pid = server.process.pid if server.process else 0
        server.restart()  # SIGKILL, then a new process (on a new port) once it answers /health
        if role == "worker":
            self.log.worker_kills += 1
        return f"SIGKILL {role} {pid}, restarted as {server.process.pid if server.process else 0}"

    def _backends(self) -> list[tuple[str, str]]:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            rows = admin.execute("SELECT application_name, state FROM pg_stat_activity").fetchall()
        return [(str(name), str(state)) for name, state in rows]

    def _terminate(self, names: list[str]) -> int:
        """Terminate the backends with these application names; how many there were.

        A process reconnects when it next needs the database, so just after a cut (faults run
        late when restarts are slow) it may have none yet: wait for one, at most RECONNECT_S.
        A process that never reconnects is what the test is for."""
        deadline = time.monotonic() + RECONNECT_S
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            while time.monotonic() < deadline:
                row = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = ANY(%s)",
                    (names,),
                ).fetchone()
                if row and row[0]:
                    return int(row[0])
                time.sleep(0.1)
        return 0

    def _cut(self) -> str:
        everyone = [(server, "worker") for server in self.workers] + [
            (server, "ingest") for server in self.ingests
        ]
        server, role = self.rng.choice(everyone)
        pid = server.process.pid if server.process else 0
        names = [f"trackyard-{pid}", f"trackyard-warehouse-{pid}"]
        count = self._terminate(names)
        if count == 0:
            raise AssertionError(
                f"{role} {pid} (exit status {server.process.poll() if server.process else None}) has not "
                f"reconnected to PostgreSQL in {RECONNECT_S} s; backends: {self._backends()}"
            )
        if role == "worker":
            self.log.worker_cuts += 1
        return f"cut {count} PostgreSQL connections of {role} {pid}"
