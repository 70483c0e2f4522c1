"""A delivery worker whose store is briefly unreachable keeps every event and moves on."""

from __future__ import annotations

import asyncio

import orjson

from tests.fakes import FakeVendor, ok_json
from trackyard.delivery import worker as worker_module
from trackyard.delivery.recorder import Recorder
from trackyard.delivery.worker import DestinationWorker
from trackyard.destinations import registry
from trackyard.destinations.base import parse_settings
from trackyard.store import LogRecord, StoreUnavailable, open_store


def test_a_dead_letter_is_written_once_the_store_is_back_and_the_position_passes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(worker_module, "DEAD_LETTER_RETRY_S", 0.05)
    store = open_store(None, tmp_path)
    store.migrate()
    source = store.create_source("web", "key")
    body = orjson.dumps({"type": "track", "messageId": "rejected-1", "event": "Signed Up", "userId": "u1"})
    store.append([LogRecord(source.id, "rejected-1", 0, "track", body)])
    add_dead_letters = store.add_dead_letters
    calls: list[int] = []

    def unreachable_twice(letters):  # the real write, after two cuts
        calls.append(len(letters))
        if len(calls) <= 2:
            raise StoreUnavailable("connection to the store was cut")
        add_dead_letters(letters)

    store.add_dead_letters = unreachable_twice  # type: ignore[method-assign]
    with FakeVendor(lambda _: ok_json({"error": "bad"}, status=400)) as vendor:
        config = store.create_destination(source.id, "webhook", "hook", {"url": vendor.url})
        store.set_position(config.consumer, 0)  # from the start of the log, not from its head
        webhook = registry.get("webhook")
        worker = DestinationWorker(
            store, config, webhook, parse_settings(webhook.Settings, config.settings), Recorder(store)
        )

        async def run_until_settled() -> None:
            task = asyncio.create_task(worker.run())
            try:
                for _ in range(200):  # bounded: 10 s
                    if store.get_position(config.consumer) == 1:
                        return
                    await asyncio.sleep(0.05)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

        asyncio.run(run_until_settled())
    assert len(calls) == 3, calls
    assert [letter.message_id for letter in store.dead_letters(config.id)] == ["rejected-1"]
    assert store.get_position(config.consumer) == 1
    store.close()
