"""History made to order: events written through the store with chosen receivedAt times."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from tests.conftest import TRACKYARD, server_env
from tests.fakes import FakeVendor
from trackyard.archive.storage import FileSystemStorage
from trackyard.archive.writer import ArchiveOptions, ArchiveWriter
from trackyard.spec import format_ms, now_ms
from trackyard.store import LogRecord, Store

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
NAMES = ("Order Completed", "Product Viewed", "Signed Up")


@dataclass(frozen=True)
class Made:
    """What a test wrote: enough to compute what a replay of any range must deliver."""

    source_id: int
    message_id: str
    received_ms: int
    type: str
    name: str


def kind_of(index: int) -> tuple[str, str]:
    """Mostly tracks of three names; every 10th an identify, every 15th a page."""
    if index % 10 == 9:
        return "identify", "identify"
    if index % 15 == 14:
        return "page", "Home"
    return "track", NAMES[index % len(NAMES)]


def record(source_id: int, index: int, received_ms: int, prefix: str = "h") -> tuple[LogRecord, Made]:
    kind, name = kind_of(index)
    message_id = f"{prefix}{source_id}-{index}"
    body: dict[str, object] = {
        "type": kind,
        "messageId": message_id,
        "userId": f"u{index % 97}",
        "timestamp": format_ms(received_ms - 50),
        "receivedAt": format_ms(received_ms),
        "properties": {"index": index},
    }
    if kind == "track":
        body["event"] = name
    if kind == "page":
        body["name"] = name
    return LogRecord(source_id, message_id, received_ms, kind, orjson.dumps(body)), Made(
        source_id, message_id, received_ms, kind, name
    )


def fill(
    store: Store,
    source_ids: list[int],
    count: int,
    start_ms: int,
    step_ms: int,
    prefix: str = "h",
    batch_size: int = 1000,
) -> list[Made]:
    """`count` events, sources taking turns, receivedAt growing by `step_ms`, in log order,
    appended `batch_size` at a time (a segment is sealed between appends only)."""
    made: list[Made] = []
    batch: list[LogRecord] = []
    for index in range(count):
        log_record, one = record(
            source_ids[index % len(source_ids)], index, start_ms + index * step_ms, prefix
        )
        batch.append(log_record)
        made.append(one)
        if len(batch) == batch_size:
            store.append(batch)
            batch = []
    if batch:
        store.append(batch)
    return made


def history_start(days_ago: int = 30) -> int:
    return (now_ms() - days_ago * DAY_MS) // HOUR_MS * HOUR_MS


def archive_all(store: Store, root: Path, checkpoint_events: int = 500_000) -> ArchiveWriter:
    writer = ArchiveWriter(
        store, FileSystemStorage(root), ArchiveOptions(checkpoint_events=checkpoint_events)
    )
    writer.catch_up()
    writer.release()
    return writer


def delivered(vendor: FakeVendor) -> list[dict]:
    """Every event the vendor received, in arrival order (batches unrolled)."""
    events: list[dict] = []
    for request in vendor.received():
        body = request.json()
        events.extend(body if isinstance(body, list) else [body])
    return events


def trackyard(data_dir: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [TRACKYARD, *args], env=server_env(data_dir, **env), capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"trackyard {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result


def json_lines(output: str) -> list[dict]:
    return [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s")
