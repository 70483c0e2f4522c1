"""The archive after an abrupt stop of a real server: no half-written file is ever listed,
and once restarted the archive holds every stored event exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import orjson

from tests.archive.helpers import json_lines, trackyard, wait_until
from trackyard.archive.history import compressed_lines
from trackyard.archive.storage import FileSystemStorage
from trackyard.store.sqlite import SQLiteStore


def archived_ids(data_dir: Path) -> Counter[str]:
    store = SQLiteStore(data_dir / "trackyard.db")
    storage = FileSystemStorage(data_dir / "archive")
    ids: Counter[str] = Counter()
    try:
        for listed in store.list_archive_files(limit=100_000):
            with storage.open(listed.key) as handle:
                ids.update(orjson.loads(line)["messageId"] for line in compressed_lines(handle))
    finally:
        store.close()
    return ids


def verify(data_dir: Path) -> dict:
    return json_lines(trackyard(data_dir, "archive", "verify", "--json", check=False).stdout)[-1]


def test_after_sigkill_listed_files_verify_and_a_restart_archives_everything_once(make_server):
    server = make_server(
        TRACKYARD_ARCHIVE_FILE_MAX_AGE_S="0.2", TRACKYARD_ARCHIVE_LEASE_S="2", TRACKYARD_SEGMENT_ROWS="2000"
    ).start()
    write_key = server.write_key
    acknowledged: list[str] = []
    stop = threading.Event()

    def ingest() -> None:
        for batch_number in range(2000):
            if stop.is_set():
                return
            ids = [f"c-{batch_number}-{i}" for i in range(50)]
            batch = [{"type": "track", "userId": "u", "event": "Clicked", "messageId": i} for i in ids]
            try:
                response = httpx.post(
                    f"{server.url}/v1/batch", auth=(write_key, ""), json={"batch": batch}, timeout=5
                )
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                acknowledged.extend(ids)

    sender = threading.Thread(target=ingest)
    sender.start()
    archive = server.data_dir / "archive"
    wait_until(lambda: len(list(archive.rglob("*.jsonl.zst"))) >= 4, what="several archive files")
    server.kill()
    stop.set()
    sender.join(10)

    report = verify(server.data_dir)
    assert report["ok"], report  # every listed file is whole and matches the manifest
    assert report["files"] >= 1 and report["problems"] == [] and report["gaps"] == []

    server.start()
    wait_until(
        lambda: (r := verify(server.data_dir))["archive_position"] == r["head"],
        what="the archive catching up",
    )
    report = verify(server.data_dir)
    assert report["ok"] and report["unlisted"] == []
    ids = archived_ids(server.data_dir)
    assert report["events"] == report["head"] == sum(ids.values())
    assert max(ids.values()) == 1  # none twice
    assert set(acknowledged) <= set(ids)  # every acknowledged event is archived
