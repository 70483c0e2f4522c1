"""The archive in an S3-compatible bucket (moto in server mode, on 127.0.0.1)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.archive.helpers import fill, history_start
from tests.conftest import free_port, missing_service
from trackyard.archive.history import History, Range
from trackyard.archive.retention import RetentionPolicy, drop_expired_segments
from trackyard.archive.service import verify_archive
from trackyard.archive.storage import S3Storage
from trackyard.archive.writer import PUBLISHING_SETTING, ArchiveWriter
from trackyard.spec import now_ms
from trackyard.store.archive import ARCHIVE_CONSUMER
from trackyard.store.sqlite import SQLiteStore

try:
    from moto.server import ThreadedMotoServer
except ImportError:  # the dev extras are not installed
    ThreadedMotoServer = None


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Storage]:
    if ThreadedMotoServer is None:
        missing_service("moto[server] is not installed (pip install -e '.[dev]')")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "trackyard-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "trackyard-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        storage = S3Storage("s3://events/archive", tmp_path / "staging", f"http://127.0.0.1:{port}")
        storage.client.create_bucket(Bucket="events")
        yield storage
    finally:
        server.stop()


def test_the_archive_in_a_bucket_is_written_verified_and_read_back_with_the_log(
    bucket: S3Storage, tmp_path: Path
):
    store = SQLiteStore(tmp_path / "trackyard.db", segment_rows=200)
    store.migrate()
    web = store.create_source("web", "k1").id
    start = history_start()
    fill(store, [web], 1000, start, 20_000, batch_size=100)
    stray = "web/2020/01/01/00-1.jsonl.zst"
    bucket.client.put_object(
        Bucket="events", Key=f"archive/{stray}", Body=b"left by an interrupted checkpoint"
    )
    store.set_setting(PUBLISHING_SETTING, f'["{stray}"]')

    ArchiveWriter(store, bucket).catch_up()
    drop_expired_segments(store, RetentionPolicy(hours=0, keep_segments=1), now_ms())
    fill(store, [web], 200, start + 1000 * 20_000, 20_000, prefix="l", batch_size=100)

    keys = list(bucket.published())
    assert stray not in keys and len(keys) == len(store.archive_files(web)) >= 6
    assert all(key.startswith("web/") for key in keys)
    report = verify_archive(store, bucket)
    assert report["ok"] and report["unlisted"] == [] and report["events"] == 1000, report
    archived = store.get_position(ARCHIVE_CONSUMER) or 0
    history = History(store, bucket, Range(web, archived, store.head()))
    assert [s.event()["messageId"] for s in history.events(0)] == [f"h{web}-{i}" for i in range(1000)] + [
        f"l{web}-{i}" for i in range(200)
    ]
    store.close()


def test_a_missing_object_is_reported_by_verify(bucket: S3Storage, tmp_path: Path):
    store = SQLiteStore(tmp_path / "trackyard.db")
    store.migrate()
    web = store.create_source("web", "k1").id
    fill(store, [web], 100, history_start(), 1000)
    archive_all_to(store, bucket)
    listed = store.archive_files(web)[0]
    bucket.delete(listed.key)
    assert verify_archive(store, bucket)["problems"] == [f"{listed.key}: listed but missing"]
    store.close()


def archive_all_to(store: SQLiteStore, storage: S3Storage) -> None:
    writer = ArchiveWriter(store, storage)
    writer.catch_up()
    writer.release()
