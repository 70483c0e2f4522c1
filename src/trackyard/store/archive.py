"""The archive manifest, leases and replay jobs, as portable SQL shared by both engines.

The manifest lists every archive file with the range of the log it holds. A file is
listed in the same transaction that moves the archive's consumer position past its
events, so the manifest and the position can never disagree (see archive/writer.py).

A lease is a named, expiring claim (one archive writer among many processes; one runner
per replay job): taken when free or expired, renewed by its owner, never by two at once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from trackyard.store.delivery import Cursor
from trackyard.store.errors import StoreError

if TYPE_CHECKING:
    from trackyard.store.base import Segment

ARCHIVE_CONSUMER = "archive"
REPLAY_CONSUMER_PREFIX = "replay:"
ACTIVE_STATES = ("pending", "running")


class ReplayNotFound(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One closed, listed archive file: events of one source and one hour, in seq order."""

    source_id: int
    hour_ms: int
    part: int
    key: str  # path relative to the archive root
    first_seq: int
    last_seq: int
    min_received_ms: int
    max_received_ms: int
    count: int
    size: int
    sha256: str
    id: int = 0


@dataclass(frozen=True, slots=True)
class ReplayCounts:
    read: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    filtered: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "read": self.read,
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": self.failed,
            "filtered": self.filtered,
        }


@dataclass(frozen=True, slots=True)
class ReplayJob:
    """A replay of one source's history into one destination.

    Positions: the job reads archive files listed up to `log_from` (the archive's position
    when the job was created), then the log from there up to `last_seq` (where the
    destination's live delivery began). `cursor` is the position every earlier event of the
    range was settled at; it is where a restarted job resumes.
    """

    id: int
    destination_id: int
    source_id: int
    since_ms: int | None
    until_ms: int | None
    events: tuple[str, ...]
    types: tuple[str, ...]
    rate: float
    log_from: int
    last_seq: int
    cursor: int
    state: str
    counts: ReplayCounts
    total: int
    error: str
    created_ms: int
    updated_ms: int
    lease_owner: str = ""
    lease_expires_ms: int = 0
    finished_ms: int | None = None

    @property
    def consumer(self) -> str:
        """The consumer position that keeps the log's part of the range from being dropped."""
        return f"{REPLAY_CONSUMER_PREFIX}{self.id}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


_JOB_COLUMNS = (
    "id, destination_id, source_id, since_ms, until_ms, events, types, rate, log_from, last_seq, cursor, "
    "state, n_read, n_sent, n_delivered, n_failed, n_filtered, total, error, created_ms, updated_ms, "
    "lease_owner, lease_expires_ms, finished_ms"
)
_FILE_COLUMNS = (
    "source_id, hour_ms, part, file_key, first_seq, last_seq, min_received_ms, max_received_ms, "
    "n_events, size, sha256, id"
)


class ArchiveTables:
    """Mixin of the store engines: the archive manifest, leases and replay jobs."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def get_position(self, consumer: str) -> int | None: ...

    @abstractmethod
    def set_position(self, consumer: str, position: int) -> None: ...

    @abstractmethod
    def segments(self) -> list[Segment]: ...

    @abstractmethod
    def drop_segment(self, segment_id: int) -> None:
        """Drop a sealed log segment whole (its table and its row): retention, never row by row."""

    # -- the manifest ----------------------------------------------------------------------
    def publish_archive_files(
        self, files: Sequence[ArchiveFile], position: int, owner: str, now: int
    ) -> bool:
        """List `files` and move the archive position to `position`, in one transaction, if
        `owner` still holds the archive lease; False (and nothing written) otherwise."""
        with self._transaction() as cur:
            renewed = cur.execute(
                "UPDATE leases SET expires_ms = expires_ms WHERE name = ? AND owner = ?",
                (ARCHIVE_CONSUMER, owner),
            ).rowcount
            if renewed != 1:
                return False
            cur.executemany(
                "INSERT INTO archive_files (source_id, hour_ms, part, file_key, first_seq, last_seq, "
                "min_received_ms, max_received_ms, n_events, size, sha256, created_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        f.source_id,
                        f.hour_ms,
                        f.part,
                        f.key,
                        f.first_seq,
                        f.last_seq,
                        f.min_received_ms,
                        f.max_received_ms,
                        f.count,
                        f.size,
                        f.sha256,
                        now,
                    )
                    for f in files
                ],
            )
            _upsert_position(cur, ARCHIVE_CONSUMER, position, now)
        return True

    def archive_files(
        self,
        source_id: int,
        after_seq: int = 0,
        upto_seq: int | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 1000,
    ) -> list[ArchiveFile]:
        """Listed files of a source holding events after `after_seq` (and up to `upto_seq`)
        that may hold events received in [since_ms, until_ms], in seq order."""
        sql = f"SELECT {_FILE_COLUMNS} FROM archive_files WHERE source_id = ? AND last_seq > ?"
        params: list[Any] = [source_id, after_seq]
        if upto_seq is not None:
            sql += " AND last_seq <= ?"
            params.append(upto_seq)
        if since_ms is not None:
            sql += " AND max_received_ms >= ?"
            params.append(since_ms)
        if until_ms is not None:
            sql += " AND min_received_ms <= ?"
            params.append(until_ms)
        rows = self._query(sql + " ORDER BY first_seq LIMIT ?", (*params, limit))
        return [_archive_file(row) for row in rows]

    def list_archive_files(self, after_id: int = 0, limit: int = 1000) -> list[ArchiveFile]:
        rows = self._query(
            f"SELECT {_FILE_COLUMNS} FROM archive_files WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [_archive_file(row) for row in rows]

    def expired_archive_files(self, before_ms: int, limit: int = 500) -> list[ArchiveFile]:
        """Listed files whose newest event was received before `before_ms`, oldest listed first."""
        rows = self._query(
            f"SELECT {_FILE_COLUMNS} FROM archive_files WHERE max_received_ms < ? ORDER BY id LIMIT ?",
            (before_ms, limit),
        )
        return [_archive_file(row) for row in rows]

    def unlist_archive_files(self, file_ids: Sequence[int]) -> None:
        """Remove files from the manifest (archive retention; their objects are deleted after)."""
        with self._transaction() as cur:
            cur.executemany("DELETE FROM archive_files WHERE id = ?", [(file_id,) for file_id in file_ids])

    def archive_file_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these keys are listed."""
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            found.update(
                row[0]
                for row in self._query(
                    f"SELECT file_key FROM archive_files WHERE file_key IN ({marks})", chunk
                )
            )
        return found

    def last_archive_part(self, source_id: int, hour_ms: int) -> int:
        row = self._query(
            "SELECT coalesce(max(part), 0) FROM archive_files WHERE source_id = ? AND hour_ms = ?",
            (source_id, hour_ms),
        )
        return int(row[0][0])

    def archive_summary(self) -> tuple[int, int, int]:
        """(files, events, bytes) in the manifest."""
        row = self._query(
            "SELECT count(*), coalesce(sum(n_events), 0), coalesce(sum(size), 0) FROM archive_files"
        )
        return int(row[0][0]), int(row[0][1]), int(row[0][2])

    def count_log(
        self, source_id: int, after: int, upto: int, since_ms: int | None = None, until_ms: int | None = None
    ) -> int:
        """Events of a source in the log with after < seq <= upto, received in [since_ms, until_ms]."""
        total = 0
        for segment in self.segments():
            if segment.last_seq <= after or segment.first_seq > upto:
                continue
            sql = f"SELECT count(*) FROM {segment.table} WHERE seq > ? AND seq <= ? AND source_id = ?"
            params: list[int] = [after, upto, source_id]
            if since_ms is not None:
                sql += " AND received_ms >= ?"
                params.append(since_ms)
            if until_ms is not None:
                sql += " AND received_ms <= ?"
                params.append(until_ms)
            total += int(self._query(sql, params)[0][0])
        return total

    def min_consumer_position(self) -> int | None:
        """The lowest position of any consumer, the archive and replays included: the log
        may drop only what every one of them has passed. None when there are none."""
        row = self._query("SELECT min(position) FROM consumer_positions")
        return None if row[0][0] is None else int(row[0][0])

    # -- replay jobs -------------------------------------------------------------------------
    def create_replay_job(
        self,
        destination_id: int,
        source_id: int,
        *,
        since_ms: int | None,
        until_ms: int | None,
        events: Sequence[str],
        types: Sequence[str],
        rate: float,
        last_seq: int,
        now: int,
        owner: str = "",
        lease_ms: int = 0,
    ) -> ReplayJob:
        """Create a job, leased to `owner` when given (a CLI that runs it at once), else
        pending for any server. Its consumer position is set to 0 before the archive
        position is read, so the log cannot drop anything the job needs in between; it is
        then raised to that position (`log_from`), below which the job reads the archive."""
        with self._transaction() as cur:
            ((job_id,),) = cur.execute(
                "INSERT INTO replay_jobs (destination_id, source_id, since_ms, until_ms, events, types, rate, "
                "log_from, last_seq, cursor, state, n_read, n_sent, n_delivered, n_failed, n_filtered, total, "
                "error, created_ms, updated_ms, lease_owner, lease_expires_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?, 0, 0, 0, 0, 0, 0, '', ?, ?, ?, ?) RETURNING id",
                (
                    destination_id,
                    source_id,
                    since_ms,
                    until_ms,
                    _dumps(list(events)),
                    _dumps(list(types)),
                    rate,
                    last_seq,
                    "running" if owner else "pending",
                    now,
                    now,
                    owner,
                    now + lease_ms if owner else 0,
                ),
            ).fetchall()
            _upsert_position(cur, f"{REPLAY_CONSUMER_PREFIX}{job_id}", 0, now)
        log_from = min(self.get_position(ARCHIVE_CONSUMER) or 0, last_seq)
        with self._transaction() as cur:
            cur.execute("UPDATE replay_jobs SET log_from = ? WHERE id = ?", (log_from, job_id))
            _upsert_position(cur, f"{REPLAY_CONSUMER_PREFIX}{job_id}", log_from, now)
        return self.get_replay_job(int(job_id))

    def set_replay_total(self, job_id: int, total: int) -> None:
        with self._transaction() as cur:
            cur.execute("UPDATE replay_jobs SET total = ? WHERE id = ?", (total, job_id))

    def get_replay_job(self, job_id: int) -> ReplayJob:
        rows = self._query(f"SELECT {_JOB_COLUMNS} FROM replay_jobs WHERE id = ?", (job_id,))
        if not rows:
            raise ReplayNotFound(f"replay {job_id} does not exist (see `trackyard replay list`)")
        return _replay_job(rows[0])

    def list_replay_jobs(self, limit: int = 100) -> list[ReplayJob]:
        rows = self._query(f"SELECT {_JOB_COLUMNS} FROM replay_jobs ORDER BY id DESC LIMIT ?", (limit,))
        return [_replay_job(row) for row in rows]

    def claimable_replay_jobs(self, now: int) -> list[int]:
        """Active jobs whose runner is gone (lease expired or never taken), oldest first."""
        rows = self._query(
            "SELECT id FROM replay_jobs WHERE state IN ('pending', 'running') AND lease_expires_ms < ? ORDER BY id",
            (now,),
        )
        return [int(row[0]) for row in rows]

    def lease_replay_job(self, job_id: int, owner: str, ttl_ms: int, now: int) -> bool:
        """Take or renew a job's lease; False when another runner holds it or the job ended."""
        with self._transaction() as cur:
            changed = cur.execute(
                "UPDATE replay_jobs SET lease_owner = ?, lease_expires_ms = ?, updated_ms = ?, state = 'running' "
                "WHERE id = ? AND state IN ('pending', 'running') AND (lease_owner = ? OR lease_expires_ms < ?)",
                (owner, now + ttl_ms, now, job_id, owner, now),
            ).rowcount
        return changed == 1

    def save_replay_progress(
        self, job_id: int, owner: str, cursor: int, counts: ReplayCounts, pin: int, now: int
    ) -> bool:
        """Save the cursor and the counts settled up to it, and move the job's log pin;
        False (nothing saved) when `owner` lost the job's lease."""
        with self._transaction() as cur:
            changed = cur.execute(
                "UPDATE replay_jobs SET cursor = ?, n_read = ?, n_sent = ?, n_delivered = ?, n_failed = ?, "
                "n_filtered = ?, updated_ms = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
                (
                    cursor,
                    counts.read,
                    counts.sent,
                    counts.delivered,
                    counts.failed,
                    counts.filtered,
                    now,
                    job_id,
                    owner,
                ),
            ).rowcount
            if changed != 1:
                return False
            _upsert_position(cur, f"{REPLAY_CONSUMER_PREFIX}{job_id}", pin, now)
        return True

    def release_replay_job(self, job_id: int, owner: str) -> None:
        """Let another runner take the job at once (this one is shutting down)."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE replay_jobs SET lease_expires_ms = 0 WHERE id = ? AND lease_owner = ?",
                (job_id, owner),
            )

    def cancel_replay_job(self, job_id: int, now: int) -> ReplayJob:
        """Stop a job; its runner notices within a lease renewal and stops sending."""
        self.get_replay_job(job_id)
        self.finish_replay_job(job_id, "cancelled", now)
        return self.get_replay_job(job_id)

    def finish_replay_job(self, job_id: int, state: str, now: int, error: str = "") -> None:
        """End a job (done, cancelled or failed) and release its hold on the log."""
        with self._transaction() as cur:
            cur.execute(
                "UPDATE replay_jobs SET state = ?, error = ?, finished_ms = ?, updated_ms = ?, lease_expires_ms = 0 "
                "WHERE id = ? AND state IN ('pending', 'running')",
                (state, error, now, now, job_id),
            )
            cur.execute(
                "DELETE FROM consumer_positions WHERE consumer = ?", (f"{REPLAY_CONSUMER_PREFIX}{job_id}",)
            )


def _upsert_position(cur: Cursor, consumer: str, position: int, now: int) -> None:
    cur.execute(
        "INSERT INTO consumer_positions (consumer, position, updated_ms) VALUES (?, ?, ?) "
        "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
        (consumer, position, now),
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _archive_file(row: tuple[Any, ...]) -> ArchiveFile:
    return ArchiveFile(
        source_id=int(row[0]),
        hour_ms=int(row[1]),
        part=int(row[2]),
        key=row[3],
        first_seq=int(row[4]),
        last_seq=int(row[5]),
        min_received_ms=int(row[6]),
        max_received_ms=int(row[7]),
        count=int(row[8]),
        size=int(row[9]),
        sha256=row[10],
        id=int(row[11]),
    )


def _replay_job(row: tuple[Any, ...]) -> ReplayJob:
    return ReplayJob(
        id=int(row[0]),
        destination_id=int(row[1]),
        source_id=int(row[2]),
        since_ms=None if row[3] is None else int(row[3]),
        until_ms=None if row[4] is None else int(row[4]),
        events=tuple(orjson.loads(row[5])),
        types=tuple(orjson.loads(row[6])),
        rate=float(row[7]),
        log_from=int(row[8]),
        last_seq=int(row[9]),
        cursor=int(row[10]),
        state=row[11],
        counts=ReplayCounts(int(row[12]), int(row[13]), int(row[14]), int(row[15]), int(row[16])),
        total=int(row[17]),
        error=row[18],
        created_ms=int(row[19]),
        updated_ms=int(row[20]),
        lease_owner=row[21],
        lease_expires_ms=int(row[22]),
        finished_ms=None if row[23] is None else int(row[23]),
    )
