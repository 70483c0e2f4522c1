"""Scale-out on PostgreSQL: ingest and worker processes apart, units of work under leases."""

from __future__ import annotations

import os
import signal
import time
import uuid

import httpx
import orjson

from tests.fakes import FakeVendor

FAST = {
    "TRACKYARD_LEASE_TTL_S": "3",
    "TRACKYARD_RETRY_BACKOFF_BASE_S": "0.05",
    "TRACKYARD_RETRY_BACKOFF_CAP_S": "0.5",
}


def serve(make_server, pg_url, role: str, tmp_path, name: str):
    """A `trackyard serve --role ROLE` process on PostgreSQL."""
    server = make_server(database_url=pg_url, data_dir=tmp_path / name, **FAST)
    server.extra_args = ["--role", role]
    return server.start()


def tracks(count: int, tag: str) -> list[dict]:
    return [
        {"type": "track", "userId": f"user-{i % 50}", "event": "Signed Up", "messageId": f"{tag}-{i}"}
        for i in range(count)
    ]


def send(ingest, write_key: str, events: list[dict]) -> None:
    for start in range(0, len(events), 100):
        response = httpx.post(
            f"{ingest.url}/v1/batch",
            auth=(write_key, ""),
            json={"batch": events[start : start + 100]},
            timeout=10,
        )
        assert response.status_code == 200, response.text


def delivered(vendor: FakeVendor) -> list[str]:
    ids: list[str] = []
    for request in vendor.received():
        body = request.json()
        ids.extend(event["messageId"] for event in (body if isinstance(body, list) else [body]))
    return ids


def status(server) -> dict:
    return orjson.loads(server.cli("status", "--json").stdout)


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def leases_by_role(server) -> dict[str, list[str]]:
    return {p["id"]: p["leases"] for p in status(server)["processes"] if p["role"] == "worker"}


def test_roles_other_than_all_need_postgres(make_server):
    server = make_server()
    result = server.cli("serve", "--role", "worker", "--port", "1", check=False)
    assert result.returncode == 2
    assert "TRACKYARD_DATABASE_URL" in result.stderr


def test_partitions_spread_over_workers_and_survive_a_killed_worker(make_server, pg_url, tmp_path):
    ingest = serve(make_server, pg_url, "ingest", tmp_path, "ingest")
    key = ingest.write_key
    with FakeVendor() as vendor:
        ingest.cli(
            "destination",
            "add",
            "default",
            "webhook",
            "--name",
            "hook",
            "--setting",
            f"url={vendor.url}",
            "--setting",
            "batch_size=50",
            "--setting",
            "partitions=2",
        )
        first = serve(make_server, pg_url, "worker", tmp_path, "worker-a")
        second = serve(make_server, pg_url, "worker", tmp_path, "worker-b")
        wait_until(lambda: sorted(len(v) for v in leases_by_role(ingest).values()) == [1, 1])

        batch = tracks(1000, uuid.uuid4().hex[:6])
        send(ingest, key, batch)
        vendor.wait_for(lambda _: set(delivered(vendor)) >= {e["messageId"] for e in batch}, timeout=30)
        processes = {p["role"] for p in status(ingest)["processes"]}
        assert processes == {"ingest", "worker", "background"}  # each worker's archive and warehouse child

        first.kill()  # its lease expires after 3 s and the other worker takes the partition
        wait_until(lambda: max(len(v) for v in leases_by_role(ingest).values()) == 2, timeout=30)
        later = tracks(1000, uuid.uuid4().hex[:6])
        send(ingest, key, later)
        vendor.wait_for(lambda _: set(delivered(vendor)) >= {e["messageId"] for e in later}, timeout=30)
        consumers = {
            c["consumer"]: c for c in status(second)["consumers"] if c["consumer"].startswith("destination")
        }
        assert len(consumers) == 2 and all(c["lag"] == 0 for c in consumers.values()), consumers


def test_a_worker_paused_past_its_lease_sends_nothing_after_it_resumes(make_server, pg_url, tmp_path):
    ingest = serve(make_server, pg_url, "ingest", tmp_path, "ingest")
    key = ingest.write_key
    with FakeVendor() as vendor:
        ingest.cli(
            "destination", "add", "default", "webhook", "--name", "hook", "--setting", f"url={vendor.url}"
        )
        paused = serve(make_server, pg_url, "worker", tmp_path, "worker-a")
        wait_until(lambda: any(leases_by_role(ingest).values()))
        before = tracks(20, "before")
        send(ingest, key, before)
        vendor.wait_for(lambda _: len(delivered(vendor)) >= 20)
        wait_until(
            lambda: all(
                c["lag"] == 0 for c in status(ingest)["consumers"] if c["consumer"].startswith("dest")
            )
        )

        os.kill(paused.process.pid, signal.SIGSTOP)
        try:
            after = tracks(20, "after")
            send(ingest, key, after)
            serve(make_server, pg_url, "worker", tmp_path, "worker-b")  # takes over once the lease expires
            vendor.wait_for(lambda _: {e["messageId"] for e in after} <= set(delivered(vendor)), timeout=30)
        finally:
            os.kill(paused.process.pid, signal.SIGCONT)
        time.sleep(3)  # the resumed worker would send now, if fencing did not stop it
        ids = delivered(vendor)
        assert sorted(ids) == sorted(e["messageId"] for e in before + after), "every event exactly once"
        log = paused.log_path.read_text()
        assert "lease" in log and ("expired" in log or "lost" in log), log[-2000:]
