"""A private, throwaway PostgreSQL server for tests that stop and restart it.

The machine's shared cluster on 5432 serves every other test, so a test that takes
PostgreSQL down gets its own: `initdb` into a temporary directory owned by the `postgres`
OS user (initdb refuses root), trust authentication, listening only on 127.0.0.1 at a
free port, driven with `pg_ctl`, stopped and deleted at teardown.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, missing_service

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
PG_CTL_TIMEOUT_S = 30


def postgres_bin_dir() -> Path | None:
    """The bin directory of the newest PostgreSQL installed under /usr/lib/postgresql."""
    versions = sorted(
        (path for path in PG_ROOT.glob("*/bin") if (path / "initdb").exists()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


@dataclass
class PrivatePostgres:
    bin_dir: Path
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", OS_USER, "--", *args] if os.geteuid() == 0 else list(args)
        return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._as_postgres(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-t", str(PG_CTL_TIMEOUT_S), *args
        )

    def init(self) -> None:
        self._as_postgres(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-instructions",
        )

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''"
        self._pg_ctl("-w", "-l", str(self.data_dir / "server.log"), "-o", options, "start")

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, open transactions rolled back."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        return int(pid_file.read_text().split()[0]) if pid_file.exists() else None

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running PostgreSQL server of our own on 127.0.0.1 at a free port; the test may
    stop and start it at will. Fails in CI (skips locally) when it cannot be set up."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing_service(f"no PostgreSQL server binaries under {PG_ROOT}")
    try:
        owner = pwd.getpwnam(OS_USER)
    except KeyError:
        missing_service(f"there is no {OS_USER!r} OS user to run a private PostgreSQL server")
    parent = Path(tempfile.mkdtemp(prefix="trackyard-pg-"))
    os.chown(parent, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(bin_dir, parent / "data", free_port())  # type: ignore[arg-type]
    try:
        try:
            server.init()
            server.start()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            missing_service(f"cannot run a private PostgreSQL server: {exc} {detail}{server.log()}")
        yield server
    finally:
        if server.pid() is not None:
            try:
                server.stop()
            except subprocess.SubprocessError:
                server._pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(parent, ignore_errors=True)
