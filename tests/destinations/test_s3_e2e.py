"""Amazon S3 end to end: a real `trackyard serve` archives the Spec scenario into a local
S3-compatible server (moto in server mode, started here), read back with boto3.

moto checks SigV4 signatures and IAM permissions only when told to: the fixture creates
an IAM user allowed `s3:*` and a bucket while checks are off, then turns them on through
moto's `/moto-api/reset-auth` (0 unauthenticated requests left), so every PUT of
trackyard must carry a valid signature of a known access key.
"""

from __future__ import annotations

import gzip
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests import spec_events
from tests.conftest import Server, free_port, missing_service
from trackyard.spec import parse_ms

try:
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError:  # the dev extra brings both
    boto3 = ThreadedMotoServer = None

SERVER_ADDED_FIELDS = ("receivedAt", "timestamp", "sentAt", "channel")
BUCKET = "trackyard-archive"
SOURCE_ID = "web-prod"
PREFIX = "archive"
ALLOW_S3 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass
class ObjectStore:
    url: str
    access_key_id: str
    secret_access_key: str
    client: Any

    def objects(self) -> dict[str, bytes]:
        listing = self.client.list_objects_v2(Bucket=BUCKET)
        return {
            item["Key"]: self.client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            for item in listing.get("Contents", [])
        }


@pytest.fixture
def object_store() -> Iterator[ObjectStore]:
    if ThreadedMotoServer is None:
        missing_service("moto[server] and boto3 are not installed (pip install -e '.[dev]')")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        setup = {"endpoint_url": url, "region_name": "us-east-1"}
        bootstrap = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **setup, **bootstrap)
        iam.create_user(UserName="trackyard")
        iam.put_user_policy(
            UserName="trackyard", PolicyName="s3", PolicyDocument=orjson.dumps(ALLOW_S3).decode()
        )
        key = iam.create_access_key(UserName="trackyard")["AccessKey"]
        boto3.client("s3", **setup, **bootstrap).create_bucket(Bucket=BUCKET)
        httpx.post(f"{url}/moto-api/reset-auth", content=b"0", timeout=5).raise_for_status()
        client = boto3.client(
            "s3",
            **setup,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        yield ObjectStore(url, key["AccessKeyId"], key["SecretAccessKey"], client)
    finally:
        httpx.post(f"{url}/moto-api/reset-auth", content=b"inf", timeout=5)  # moto's settings are per process
        httpx.post(f"{url}/moto-api/reset", timeout=5)
        server.stop()


def add_s3(server: Server, store: ObjectStore, name: str, secret: str) -> None:
    server.cli(
        "destination",
        "add",
        "default",
        "s3",
        "--name",
        name,
        "--setting",
        f"base_url={store.url}",
        "--setting",
        f"bucket={BUCKET}",
        "--setting",
        f"access_key_id={store.access_key_id}",
        "--setting",
        f"secret_access_key={secret}",
        "--setting",
        f"source_id={SOURCE_ID}",
        "--setting",
        f"prefix={PREFIX}",
        "--setting",
        "batch_wait=0.5",
    )
    time.sleep(1.5)


def send_scenario(server: Server) -> set[str]:
    messages = [
        {key: value for key, value in event.items() if key not in SERVER_ADDED_FIELDS}
        for event in spec_events.scenario()
    ]
    response = httpx.post(
        f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": messages}, timeout=15
    )
    assert response.status_code == 200, response.text
    return {message["messageId"] for message in messages}


def archived_lines(objects: dict[str, bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for body in objects.values() for line in gzip.decompress(body).splitlines()]


def wait_for_archive(store: ObjectStore, message_ids: set[str], timeout: float = 20.0) -> dict[str, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        objects = store.objects()
        if message_ids <= {line["messageId"] for line in archived_lines(objects)}:
            return objects
        time.sleep(0.2)
    raise AssertionError(
        f"the archive did not hold {len(message_ids)} events after {timeout} s: {list(objects)}"
    )


def wait_for_status(server: Server, name: str, done: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = orjson.loads(server.cli("destination", "status", name, "--json").stdout)
        if done(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"destination {name} did not settle in {timeout} s: {status}")


def test_the_spec_scenario_is_archived_once_each_in_segments_s3_layout(server, object_store):
    add_s3(server, object_store, "archive", object_store.secret_access_key)
    message_ids = send_scenario(server)
    objects = wait_for_archive(object_store, message_ids)

    lines = archived_lines(objects)
    assert Counter(line["messageId"] for line in lines) == Counter(message_ids)  # each exactly once
    stored = {event["messageId"]: event for event in server.events("--source", "default")}
    assert {line["messageId"]: line for line in lines} == stored  # full messages, as stored
    for key in objects:
        match = re.fullmatch(rf"{PREFIX}/segment-logs/{SOURCE_ID}/(\d+)/(\d+)-[0-9a-f]{{16}}\.gz", key)
        assert match, key
        day, first_received = int(match[1]), int(match[2])
        assert day % 86_400_000 == 0
        assert day <= first_received < day + 86_400_000
        head = object_store.client.head_object(Bucket=BUCKET, Key=key)
        assert (head["ContentType"], head["ContentEncoding"]) == ("text/plain", "gzip")
    assert all(
        int(key.split("/")[3]) == received - received % 86_400_000
        for key, body in objects.items()
        for received in (
            parse_ms(orjson.loads(line)["receivedAt"]) for line in gzip.decompress(body).splitlines()
        )
    )
    assert wait_for_status(server, "archive", lambda s: s["delivered"] == len(message_ids))["failed"] == 0


def test_a_wrong_secret_is_refused_by_the_store_and_given_up_not_retried(server, object_store):
    add_s3(server, object_store, "archive", "not-the-secret")
    message_ids = send_scenario(server)
    status = wait_for_status(server, "archive", lambda s: s["failed"] == len(message_ids))
    assert status["delivered"] == 0
    assert status["dead_letters"] == len(message_ids)
    assert "SignatureDoesNotMatch" in status["last_errors"][0]["reason"]
    assert object_store.objects() == {}
