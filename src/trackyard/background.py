"""The serving process's background child, `trackyard background`: the warehouse loader and
the archive writer (with log retention), in a process of their own.

Inside the serving process both shared the GIL with ingest: DuckDB's batches (JSON
extraction, Arrow, its buffers) raised ingest's latency and peak RSS by hundreds of MB, and
the archive writer's line and zstd work took ~10 % of the GIL that ingest is bound by. As a
child they run at a lower CPU priority (`CHILD_NICE`), so under peak load the kernel gives
ingest the cores and they catch up afterwards (both are consumers of the log, with their own
positions). The child stops with its parent (PR_SET_PDEATHSIG, and a check of the parent's
pid every tick for other systems), and the parent starts it again if it exits. Replays stay
in the serving process: they deliver, as the destination workers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trackyard.store import Store

log = logging.getLogger(__name__)

CHILD_NICE = 10
PR_SET_PDEATHSIG = 1
RESTART_DELAY_S = 1.0
RESTART_DELAY_CAP_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child that ran this long is restarted at once when it exits
STOP_TIMEOUT_S = 60.0  # a batch in progress finishes before the child exits
PARENT_CHECK_S = 1.0


class BackgroundProcess:
    """Keeps one `trackyard background` child alive while the serving process runs."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pid: int | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "trackyard", "background", "--child-of", str(os.getpid())]

    async def run(self) -> None:
        delay = RESTART_DELAY_S
        env = {**os.environ, "TRACKYARD_DATA_DIR": str(self.data_dir)}
        while True:
            started = time.monotonic()
            child = await asyncio.create_subprocess_exec(*self.command(), env=env)
            self.pid = child.pid
            try:
                code = await child.wait()
            except asyncio.CancelledError:
                await _stop(child)
                raise
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                delay = RESTART_DELAY_S
            log.warning(
                "background process (pid %d) exited with %s; restarting in %.0f s", child.pid, code, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_CAP_S)


async def _stop(child: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if the batch in progress takes longer than STOP_TIMEOUT_S."""
    if child.returncode is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(child.wait()), STOP_TIMEOUT_S)
    except TimeoutError:
        child.kill()
        await child.wait()


async def heartbeat(store: Store, process_id: str, role: str, every_s: float) -> None:
    """Tell the other processes (and `trackyard status`) that `process_id` is alive, now and
    every `every_s` seconds; a failed beat is logged and tried again at the next."""
    while True:
        try:
            await asyncio.to_thread(store.heartbeat, process_id, role, socket.gethostname(), os.getpid())
        except Exception:
            log.exception("heartbeat failed; retrying")
        await asyncio.sleep(every_s)


def become_child_of(parent: int) -> None:
    """Lower this process's priority and ask to be sent SIGTERM when the parent dies."""
    os.nice(CHILD_NICE)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the pid check below stands in
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before PR_SET_PDEATHSIG took effect
        raise SystemExit(0)


def run_until_stopped(work: Coroutine[Any, Any, None], parent: int | None) -> None:
    """Run `work` until SIGTERM or SIGINT, or until `parent` (when given) is gone; cancelling
    it lets the batch in progress finish."""

    async def main() -> None:
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        watcher = asyncio.create_task(_cancel_when_orphaned(task, parent)) if parent else None
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if watcher:
            watcher.cancel()

    asyncio.run(main())


async def _cancel_when_orphaned(task: asyncio.Future[None], parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("the serving process %d is gone; stopping", parent)
    task.cancel()
