"""Processes the benchmark starts, and what /proc says about them.

Every process is started through `Processes`, which stops each one by its own PID
(SIGTERM, then SIGKILL) when asked, including on errors and interrupts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Processes:
    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            process = subprocess.Popen(list(command), env=env, stdout=out, stderr=subprocess.STDOUT)
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 30.0) -> None:
    """Wait for `url` to answer 200 while `process` lives (and still lives a moment later:
    on a shared machine another program may have taken the port, and answered)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}: {log_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    else:
        raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s: {log_tail(log)}")
    time.sleep(0.3)
    if process.poll() is not None:
        raise RuntimeError(f"{process.args[0]} exited with {process.returncode}: {log_tail(log)}")


def log_tail(log: Path, lines: int = 6) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads, from /proc/<pid>/stat."""
    return _stat_cpu(f"/proc/{pid}/stat")


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of the process's main thread only (in a uvicorn server: the event loop)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time of each thread of a process, by thread id."""
    result = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            result[int(task.name)] = _stat_cpu(str(task / "stat"))
        except OSError:
            continue  # the thread ended meanwhile
    return result


def _stat_cpu(path: str) -> float:
    with open(path) as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the resident set's high-water mark."""
    return _status_kb(pid, "VmHWM") / 1024


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (serve's parsers and its background child)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def ingest_helpers_of(pid: int) -> list[int]:
    """serve's parser and writer processes: part of ingest, so their CPU and memory count as
    the server's."""
    return [child for child in children(pid) if _is_ingest_helper(child)]


def background_of(pid: int) -> list[int]:
    """serve's other children: the warehouse loader and archive writer."""
    return [child for child in children(pid) if not _is_ingest_helper(child)]


def _is_ingest_helper(pid: int) -> bool:
    return any(module in INGEST_HELPER_MODULES for module in _cmdline(pid))


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


INGEST_HELPER_MODULES = (b"trackyard.ingest.parser_worker", b"trackyard.ingest.writer_worker")


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def host_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, which is already in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def cpu_seconds_of(command_name: str) -> float:
    """Summed CPU time of every process whose comm is `command_name` (e.g. the PostgreSQL backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(")")
        if name == command_name:
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total
