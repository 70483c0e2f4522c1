"""What the admin needs from the store beyond the `Store` interface, as portable SQL.

Written over the two primitives every engine provides (`_query`, `_transaction`, both
taking `?` placeholders) and the public segment list, so it behaves the same on SQLite
and PostgreSQL. Reads never touch event bodies unless they return them.

Sources are deleted softly: SQLite reuses the highest rowid after a delete, so a source
created later could inherit a deleted source's id and, with it, its history in the log.
A deleted source is disabled (its write key stops working), renamed out of the way and
hidden from the admin, and its id is never given out again.
"""

from __future__ import annotations

import secrets
from typing import Any

from trackyard.store import Store, StoredEvent, StoredFailure
from trackyard.store.delivery import DestinationConfig

DELETED_PREFIX = "deleted-"


def _bytes(value: Any) -> bytes:
    """SQLite returns BLOBs as bytes, PostgreSQL TEXT as str and BYTEA as bytes or memoryview."""
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def newest_events(store: Store, source_id: int, limit: int) -> list[StoredEvent]:
    """The `limit` newest events of one source, oldest first (a backwards walk over the segments)."""
    found: list[StoredEvent] = []
    for segment in reversed(store.segments()):
        if len(found) >= limit:
            break
        if segment.last_seq < segment.first_seq:
            continue
        rows = store._query(
            f"SELECT seq, source_id, received_ms, body FROM {segment.table} "
            "WHERE source_id = ? ORDER BY seq DESC LIMIT ?",
            (source_id, limit - len(found)),
        )
        found.extend(StoredEvent(int(r[0]), int(r[1]), int(r[2]), _bytes(r[3])) for r in rows)
    return found[::-1]


def newest_failures(store: Store, source_id: int, limit: int) -> list[StoredFailure]:
    rows = store._query(
        "SELECT id, source_id, received_ms, code, reason, body FROM ingest_failures "
        "WHERE source_id = ? ORDER BY id DESC LIMIT ?",
        (source_id, limit),
    )
    return [StoredFailure(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], _bytes(r[5])) for r in rows][::-1]


def received_per_minute(
    store: Store, since_ms: int, after_seq: int
) -> tuple[list[tuple[int, int, int]], int]:
    """(source id, minute, count) of the events after `after_seq` received at or after
    `since_ms`, and the highest seq counted. Segments wholly older than `since_ms` or
    wholly at or before `after_seq` are skipped without being read."""
    counts: list[tuple[int, int, int]] = []
    highest = after_seq
    for segment in store.segments():
        if segment.last_seq <= after_seq or (segment.max_received_ms or 0) < since_ms:
            continue
        rows = store._query(
            f"SELECT source_id, received_ms / 60000, count(*), max(seq) FROM {segment.table} "
            "WHERE seq > ? AND received_ms >= ? GROUP BY source_id, received_ms / 60000",
            (after_seq, since_ms),
        )
        for source_id, minute, count, top in rows:
            counts.append((int(source_id), int(minute), int(count)))
            highest = max(highest, int(top))
    return counts, highest


def replace_write_key(store: Store, source_id: int, write_key: str) -> None:
    with store._transaction() as cur:
        cur.execute("UPDATE sources SET write_key = ? WHERE id = ?", (write_key, source_id))


def retire_source(store: Store, source_id: int, name: str, slug: str) -> None:
    """Disable a source, free its name and slug, and revoke its write key."""
    with store._transaction() as cur:
        cur.execute(
            "UPDATE sources SET enabled = ?, name = ?, slug = ?, write_key = ? WHERE id = ?",
            (
                False,
                f"{DELETED_PREFIX}{source_id}-{name}"[:200],
                f"deleted_{source_id}_{slug}"[:200],
                f"{DELETED_PREFIX}{source_id}-{secrets.token_hex(16)}",
                source_id,
            ),
        )


def remove_destination(store: Store, config: DestinationConfig) -> None:
    """A destination and everything recorded about it; its worker stops at the engine's next sync."""
    with store._transaction() as cur:
        for table in ("dead_letters", "delivery_attempts", "delivery_minutes", "delivery_workers"):
            cur.execute(f"DELETE FROM {table} WHERE destination_id = ?", (config.id,))
        cur.execute("DELETE FROM consumer_positions WHERE consumer = ?", (config.consumer,))
        cur.execute("DELETE FROM destinations WHERE id = ?", (config.id,))
