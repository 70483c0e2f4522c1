"""`serve` loads its warehouses and writes its archive from a child process (`trackyard
background`): at a lower priority, started again when it dies, and gone when the server is gone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import PG_URL
from tests.warehouse.test_serve import query_when_loaded, send_scenario
from trackyard.config import Config
from trackyard.spec import now_ms
from trackyard.store.archive import ARCHIVE_CONSUMER

COUNT_TRACKS = 'SELECT count(*) FROM "default".tracks'


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def background_of(server_pid: int, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in children(server_pid):
            if b"background" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no background child of {server_pid}")


def archive_lease_pid(data_dir: Path) -> int | None:
    """The pid in the owner ('host:pid:nonce') of the unexpired archive lease."""
    store = Config.from_env({"TRACKYARD_DATA_DIR": str(data_dir)}).open_store()
    try:
        owners = [
            lease.owner
            for lease in store.leases()
            if lease.name == ARCHIVE_CONSUMER and lease.expires_ms > now_ms()
        ]
    finally:
        store.close()
    return int(owners[0].split(":")[1]) if owners else None


def status(server) -> dict:
    return orjson.loads(server.cli("status", "--json").stdout)


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def wait_for(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def wait_gone(pid: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} still runs")


def test_loader_and_archive_run_apart_are_restarted_and_die_with_the_server(make_server):
    server = make_server(TRACKYARD_WAREHOUSE_INTERVAL_S="1").start()
    loader = background_of(server.process.pid)
    wait_for(lambda: nice_of(loader) == nice_of(server.process.pid) + 10, "the child lowers its priority")
    send_scenario(server)
    first = query_when_loaded(server.data_dir / "warehouse.duckdb", COUNT_TRACKS)[0][0]
    assert first > 0
    wait_for(lambda: archive_lease_pid(server.data_dir) == loader, "the child holds the archive lease")
    [child] = [p for p in status(server)["processes"] if p["role"] == "background"]
    assert child["pid"] == loader and child["leases"] == ["archive"]  # `trackyard status` shows it

    os.kill(loader, signal.SIGKILL)
    wait_gone(loader)
    replacement = background_of(server.process.pid)
    assert replacement != loader
    later = [
        {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": f"later-{i}"} for i in range(5)
    ]
    response = httpx.post(
        f"{server.url}/v1/batch", json={"batch": later}, auth=(server.write_key, ""), timeout=15
    )
    assert response.status_code == 200, response.text
    wait_for(
        lambda: query_when_loaded(server.data_dir / "warehouse.duckdb", COUNT_TRACKS)[0][0] == first + 5,
        "the restarted loader loads what came after",
        timeout_s=60,
    )
    wait_for(
        lambda: archive_lease_pid(server.data_dir) == replacement,
        "the restarted child takes the archive over once the dead one's lease expires",
        timeout_s=60,
    )

    server.kill()  # SIGKILL: no shutdown hook runs, the child must still go
    wait_gone(replacement)


def test_the_built_in_warehouse_is_on_by_default_with_sqlite_only(tmp_path):
    sqlite = Config.from_env({"TRACKYARD_DATA_DIR": str(tmp_path)})
    postgres = Config.from_env({"TRACKYARD_DATA_DIR": str(tmp_path), "TRACKYARD_DATABASE_URL": PG_URL})
    chosen = Config.from_env(
        {
            "TRACKYARD_DATABASE_URL": PG_URL,
            "TRACKYARD_DEFAULT_WAREHOUSE": "on",
            "TRACKYARD_DATA_DIR": str(tmp_path),
        }
    )
    assert sqlite.builtin_warehouse is not None
    assert postgres.builtin_warehouse is None  # each worker machine would keep a file of its own
    assert chosen.builtin_warehouse is not None
