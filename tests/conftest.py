"""Shared fixtures: real `trackyard serve` processes, real PostgreSQL schemas."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
TRACKYARD = str(Path(sys.executable).parent / "trackyard")
PG_URL = os.environ.get("TRACKYARD_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_service(reason: str) -> None:
    """Skip locally, fail in CI: a test whose service is missing must never pass silently there."""
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


@dataclass
class Server:
    """A `trackyard serve` subprocess bound to 127.0.0.1 on a free port."""

    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_args: list[str] = field(default_factory=list)  # e.g. ["--role", "worker"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Server:
        self.log_path = self.data_dir.parent / f"serve-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed by the child's exit
        self.process = subprocess.Popen(
            [TRACKYARD, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"trackyard serve exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"trackyard serve did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> Server:
        self.kill()
        self.port = free_port()
        return self.start()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TRACKYARD, *args], env=self.env, capture_output=True, text=True, check=check)

    @property
    def write_key(self) -> str:
        return (
            self.cli("source", "list", "--json")
            .stdout.splitlines()[0]
            .split('"write_key":"')[1]
            .split('"')[0]
        )

    def events(self, *args: str) -> list[dict]:
        import orjson

        lines = self.cli("events", "--json", *args).stdout.splitlines()
        return [orjson.loads(line) for line in lines if line.strip()]


def server_env(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRACKYARD_")}
    env["TRACKYARD_DATA_DIR"] = str(data_dir)
    if database_url:
        env["TRACKYARD_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory of servers on fresh data directories; every server is stopped at teardown."""
    servers: list[Server] = []

    def make(database_url: str | None = None, data_dir: Path | None = None, **extra: str) -> Server:
        directory = data_dir or tmp_path / f"data-{len(servers)}"
        directory.mkdir(parents=True, exist_ok=True)
        server = Server(directory, server_env(directory, database_url, **extra))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server) -> Server:
    """A running server on the embedded default (SQLite) with its `default` source."""
    return make_server().start()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        missing_service(f"PostgreSQL at {PG_URL} is not reachable: {exc}")
    schema = f"ty_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_service(f"{name} is not installed")
    return path  # type: ignore[return-value]
