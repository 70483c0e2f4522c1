"""The writer process: appends and the dedupe window of the embedded store in a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import orjson
import pytest

from tests.test_background import children, wait_gone
from trackyard.config import Config
from trackyard.ingest import children as child_processes
from trackyard.ingest.children import FRAME_HEAD
from trackyard.ingest.writer import WriterClient
from trackyard.ingest.writer_worker import append_frame, records_from
from trackyard.spec import now_ms
from trackyard.store import FailureRecord, LogRecord, StoreUnavailable
from trackyard.store.sqlite import SQLiteStore

T0 = 1_746_093_600_000
T = TypeVar("T")


def record(source_id: int, message_id: str, received_ms: int = T0) -> LogRecord:
    body = orjson.dumps({"type": "track", "messageId": message_id, "event": "é ✓", "userId": "u"})
    return LogRecord(source_id, message_id, received_ms, "track", body)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "trackyard.db")
    store.migrate()
    store.create_source("default", "k-default")
    yield store
    store.close()


def test_a_group_survives_its_frame_byte_for_byte():
    records = [record(1, "a"), record(2, "ü-ß", T0 + 5), LogRecord(1, "empty", T0, "page", b"")]
    failures = [FailureRecord(1, T0, "no_event_name", "track requires 'event'", b'{"type":"track"}')]
    frame = append_frame(records, failures)
    meta_size, payload_size = FRAME_HEAD.unpack(frame[: FRAME_HEAD.size])
    meta = frame[FRAME_HEAD.size : FRAME_HEAD.size + meta_size]
    payload = frame[FRAME_HEAD.size + meta_size :]

    assert len(payload) == payload_size
    assert records_from(orjson.loads(meta), payload) == (records, failures)
    with pytest.raises(ValueError, match="left over"):
        records_from(orjson.loads(meta), payload + b"x")


def run(store: SQLiteStore, scenario: Callable[[WriterClient], Awaitable[T]]) -> T:
    """Run `scenario` with a started writer client on a fresh event loop, then stop it."""

    async def main() -> T:
        client = WriterClient(store)
        await client.start()
        try:
            return await scenario(client)
        finally:
            await client.stop()

    return asyncio.run(main())


async def stored_by(store: SQLiteStore, client: WriterClient, records: list[LogRecord]) -> list[str]:
    await client.commit(records, [])
    return [event.event()["messageId"] for event in store.read_log()]


def test_the_writer_appends_dedupes_and_prunes(store: SQLiteStore):
    failure = FailureRecord(1, T0, "no_user_anon_id", "track requires 'userId' or 'anonymousId'", b"{}")
    stored: list[float] = []

    async def scenario(client: WriterClient) -> tuple[list[str], int, list[str]]:
        client.listeners.append(lambda: stored.append(time.monotonic()))
        # Concurrent commits share exchanges with the writer; duplicates go across and within them.
        await asyncio.gather(
            client.commit([record(1, "a"), record(1, "b")], [failure]),
            client.commit([record(1, "a")], []),
            client.commit([record(1, "c")], []),
        )
        first = [event.event()["messageId"] for event in store.read_log()]
        pruned = await client.prune_dedupe(T0 + 2 * 86_400_000)
        return first, pruned, await stored_by(store, client, [record(1, "a", T0 + 2 * 86_400_000)])

    first, pruned, after = run(store, scenario)
    assert first == ["a", "b", "c"] and len(store.read_failures()) == 1
    assert pruned == 3 and after == ["a", "b", "c", "a"]
    assert stored and store._recent_loaded is False  # the window is the writer's, not serve's


def test_a_new_writer_rebuilds_the_window_from_the_log(store: SQLiteStore):
    now = now_ms()  # the window rebuilt at start-up holds the last 24 h

    async def scenario(client: WriterClient) -> tuple[list[str], bool]:
        await client.commit([record(1, "a", now), record(1, "b", now)], [])
        first = client.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_gone(first)
        for _ in range(100):  # the group the dead writer would have held fails; a later one goes in
            try:
                return await stored_by(
                    store, client, [record(1, "a", now), record(1, "c", now)]
                ), client.pid != first
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        raise AssertionError("no new writer took the group")

    stored, replaced = run(store, scenario)
    assert stored == ["a", "b", "c"] and replaced


def test_a_writer_that_breaks_the_protocol_fails_its_group_and_is_replaced(store: SQLiteStore):
    async def scenario(client: WriterClient) -> list[str]:
        first = client.pid
        assert client._writer is not None
        client._writer.write(FRAME_HEAD.pack(3, 0) + b"{{{")  # the writer cannot parse it and exits
        with pytest.raises(StoreUnavailable, match="writer process exited"):
            await client.commit([record(1, "lost")], [])
        for _ in range(100):
            with contextlib.suppress(StoreUnavailable):
                stored = await stored_by(store, client, [record(1, "after")])
                assert client.pid != first
                return stored
            await asyncio.sleep(0.05)
        raise AssertionError("no new writer")

    assert run(store, scenario) == ["after"]


def test_while_no_writer_can_start_commits_fail_and_then_go_in_again(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
):
    async def scenario(client: WriterClient) -> list[str]:
        first = client.pid
        assert first is not None
        monkeypatch.setattr(child_processes.sys, "executable", "/nonexistent/python")
        os.kill(first, signal.SIGKILL)
        wait_gone(first)
        for _ in range(3):  # the dead writer's exit, then failed starts: all answered 503
            with pytest.raises(StoreUnavailable):
                await client.commit([record(1, "refused")], [])
        monkeypatch.undo()
        for _ in range(100):
            with contextlib.suppress(StoreUnavailable):
                return await stored_by(store, client, [record(1, "accepted")])
            await asyncio.sleep(0.05)
        raise AssertionError("no writer started again")

    assert run(store, scenario) == ["accepted"]


def test_a_second_writer_waits_for_the_first_to_exit(store: SQLiteStore):
    now = now_ms()

    async def scenario(first: WriterClient) -> list[str]:
        await first.commit([record(1, "a", now)], [])
        second = WriterClient(store)
        await second.start()
        try:
            appending = asyncio.create_task(second.commit([record(1, "a", now), record(1, "b", now)], []))
            await asyncio.sleep(1.0)
            assert not appending.done()  # its process waits on the writer lock
            await first.stop()
            await asyncio.wait_for(appending, 30)
        finally:
            await second.stop()
        # It rebuilt its window only once the first writer had gone: "a" is a duplicate.
        return [event.event()["messageId"] for event in store.read_log()]

    assert run(store, scenario) == ["a", "b"]


def writer_children(pid: int) -> list[int]:
    return [
        child
        for child in children(pid)
        if b"trackyard.ingest.writer_worker" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_serve_commits_through_the_configured_writer(make_server, mode: str) -> None:
    server = make_server(TRACKYARD_INGEST_WRITER=mode).start()
    body = {"userId": "u", "event": "Signed Up", "messageId": "m-1"}
    for _ in range(2):  # the second is a duplicate, dropped by whichever holds the window
        response = httpx.post(f"{server.url}/v1/track", json=body, auth=(server.write_key, ""), timeout=15)
        assert response.status_code == 200 and response.json() == {"success": True}

    assert [event["messageId"] for event in server.events()] == ["m-1"]
    writers = writer_children(server.process.pid)
    assert len(writers) == (1 if mode == "process" else 0)
    server.kill()  # SIGKILL: the kernel takes the writer with serve
    for pid in writers:
        wait_gone(pid)


def test_the_writer_setting_is_checked() -> None:
    assert Config.from_env({}).ingest_writer == "process"
    assert Config.from_env({"TRACKYARD_INGEST_WRITER": "Thread"}).ingest_writer == "thread"
    with pytest.raises(ValueError, match="TRACKYARD_INGEST_WRITER must be process or thread"):
        Config.from_env({"TRACKYARD_INGEST_WRITER": "fork"})
