"""The group committer tells background consumers when ingest runs near its peak."""

from __future__ import annotations

import asyncio
from pathlib import Path

from trackyard.ingest.committer import BUSY_GROUP_REQUESTS, GroupCommitter
from trackyard.store import LogRecord
from trackyard.store.sqlite import SQLiteStore


def records(source_id: int, first: int, count: int) -> list[LogRecord]:
    return [LogRecord(source_id, f"m{i}", 1, "track", b"{}") for i in range(first, first + count)]


async def commit_together(committer: GroupCommitter, source_id: int, requests: int) -> None:
    """`requests` requests of 10 events; the writer thread starts only once all of them wait,
    so that they make one group."""
    waiting = asyncio.gather(
        *(committer.commit(records(source_id, 1000 * requests + 10 * n, 10), []) for n in range(requests))
    )
    await asyncio.sleep(0.05)
    committer.start()
    await waiting


def test_busy_once_requests_queue_up_behind_a_commit_and_not_after_a_single_request(tmp_path: Path):
    store = SQLiteStore(tmp_path / "trackyard.db")
    store.migrate()
    source = store.create_source("web", "k1")
    alone, queued = GroupCommitter(store), GroupCommitter(store)
    try:
        asyncio.run(commit_together(alone, source.id, 1))
        assert (alone.commits, alone.busy()) == (1, False)

        asyncio.run(commit_together(queued, source.id, BUSY_GROUP_REQUESTS))
        assert (queued.commits, queued.stored) == (1, 10 * BUSY_GROUP_REQUESTS)  # one group
        assert queued.busy()
        assert not queued.busy(within_s=0.0)
    finally:
        alone.stop()
        queued.stop()
        store.close()
