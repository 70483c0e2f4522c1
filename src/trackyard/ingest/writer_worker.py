"""The writer process (see writer.py): `python -m trackyard.ingest.writer_worker FD DB …`.

Appends the groups framed by the serving process to the embedded store, which keeps the
dedupe window here, and answers each in order. It exits when serve closes its end of the
socket, and is killed by the kernel when serve dies (PR_SET_PDEATHSIG).

Request headers: {"append": [[source_id, message_id, received_ms, type, size]…],
"failures": [[source_id, received_ms, code, reason, size]…]} with the bodies as payload, in
order; or {"prune": now_ms}. Answers: {"result": [stored, duplicates, failed]},
{"pruned": n} or {"unavailable": message}.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from trackyard.ingest.children import frame, read_frame, tune_garbage_collector
from trackyard.store.base import FailureRecord, LogRecord, StoreUnavailable
from trackyard.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


# -- frames ----------------------------------------------------------------------------
def append_frame(records: Sequence[LogRecord], failures: Sequence[FailureRecord]) -> bytes:
    header = {
        "append": [[r.source_id, r.message_id, r.received_ms, r.type, len(r.body)] for r in records],
        "failures": [[f.source_id, f.received_ms, f.code, f.reason, len(f.body)] for f in failures],
    }
    return frame(header, b"".join([*(r.body for r in records), *(f.body for f in failures)]))


def records_from(header: dict[str, Any], payload: bytes) -> tuple[list[LogRecord], list[FailureRecord]]:
    records: list[LogRecord] = []
    failures: list[FailureRecord] = []
    offset = 0
    for source_id, message_id, received_ms, call_type, size in header["append"]:
        records.append(
            LogRecord(source_id, message_id, received_ms, call_type, payload[offset : offset + size])
        )
        offset += size
    for source_id, received_ms, code, reason, size in header["failures"]:
        failures.append(FailureRecord(source_id, received_ms, code, reason, payload[offset : offset + size]))
        offset += size
    if offset != len(payload):
        raise ValueError(f"append frame: {len(payload) - offset} payload bytes left over")
    return records, failures


# -- the writer process's side -------------------------------------------------------------
def serve(sock: socket.socket, store: SQLiteStore) -> None:
    with sock, sock.makefile("rb") as frames:
        while (request := read_frame(frames)) is not None:
            sock.sendall(frame(_handle(store, *request), b""))


def _handle(store: SQLiteStore, meta: bytes, payload: bytes) -> dict[str, Any]:
    header = orjson.loads(meta)
    try:
        if "prune" in header:
            return {"pruned": store.prune_dedupe(header["prune"])}
        result = store.append(*records_from(header, payload))
    except StoreUnavailable as exc:
        return {"unavailable": str(exc)}
    except Exception as exc:  # answered, not fatal: the next group may commit
        log.exception("append failed in the writer process")
        return {"unavailable": f"the event log could not commit: {exc}"}
    return {"result": [result.stored, result.duplicates, result.failed]}


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl
        sys.exit(1)


def main(argv: list[str]) -> None:
    fd, path, synchronous, segment_rows, window_s, busy_ms = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops serve, which closes the socket
    _die_with_parent()
    tune_garbage_collector()
    store = SQLiteStore(
        Path(path),
        synchronous=synchronous,
        segment_rows=int(segment_rows),
        dedupe_window_s=int(window_s),
        busy_timeout_ms=int(busy_ms),
    )
    with _only_writer(Path(path)), contextlib.closing(store):
        serve(socket.socket(fileno=int(fd)), store)


@contextlib.contextmanager
def _only_writer(database: Path) -> Iterator[None]:
    """Wait until no other writer process holds the database's writer lock, then hold it.

    A serve killed with SIGKILL takes its writer with it, but not at once (~1 s measured):
    the next serve's writer must not rebuild its window while the old one still commits.
    """
    with open(database.with_name(database.name + ".writer-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
