"""Where archive files live: a directory by default, or an S3-compatible bucket.

The writer always compresses into a local staging file; `publish` makes a finished file
visible under its key in one atomic step (a rename on a filesystem, a single PUT in a
bucket), so a reader never sees a half-written file under a real name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

SUFFIX = ".jsonl.zst"


class ArchiveStorage(ABC):
    """A flat namespace of keys like `web/2026/11/28/15-1.jsonl.zst`."""

    @abstractmethod
    def staging_path(self) -> Path:
        """A fresh local path to write a file into before it is published."""

    @abstractmethod
    def clear_staging(self) -> None:
        """Remove staging files left by an interrupted writer."""

    @abstractmethod
    def publish(self, staged: Path, key: str) -> None:
        """Make the complete, fsynced file `staged` visible as `key`, atomically."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; nothing happens when it does not exist."""

    @abstractmethod
    def published(self) -> Iterator[str]:
        """Every published key."""

    @abstractmethod
    def describe(self) -> str: ...


class FileSystemStorage(ArchiveStorage):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging = self.root / ".staging"

    def staging_path(self) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / f"{uuid.uuid4().hex}.tmp"

    def clear_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def publish(self, staged: Path, key: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        _fsync_directory(target.parent)

    def open(self, key: str) -> BinaryIO:
        return open(self.root / key, "rb")

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def published(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for directory, subdirectories, files in os.walk(self.root):
            subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
            for name in sorted(files):
                if name.endswith(SUFFIX):
                    yield Path(directory, name).relative_to(self.root).as_posix()

    def describe(self) -> str:
        return str(self.root)


def _fsync_directory(path: Path) -> None:
    """Make a rename durable: the new directory entry survives a power cut."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class S3Storage(ArchiveStorage):
    """Objects `<prefix>/<key>` in a bucket of any S3-compatible service (AWS, MinIO, Ceph,
    R2…), through botocore. Credentials and region come from the standard AWS chain
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ~/.aws, instance roles)."""

    def __init__(self, url: str, staging: Path, endpoint_url: str | None = None) -> None:
        import botocore.session

        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"archive URL {url!r} must look like s3://bucket or s3://bucket/prefix")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url
        self.staging = Path(staging)
        session = botocore.session.get_session()
        region = session.get_config_variable("region") or "us-east-1"
        self.client: Any = session.create_client("s3", endpoint_url=endpoint_url, region_name=region)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def staging_path(self) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / f"{uuid.uuid4().hex}.tmp"

    def clear_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def publish(self, staged: Path, key: str) -> None:
        with open(staged, "rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=self._object(key), Body=body)
        staged.unlink()

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"]  # type: ignore[no-any-return]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"s3://{self.bucket}/{self._object(key)}") from None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def published(self) -> Iterator[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                if item["Key"].endswith(SUFFIX):
                    yield item["Key"][len(start) :]

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where
