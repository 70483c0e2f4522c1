"""Coordination of many trackyard processes through the database alone (portable SQL).

* Processes register and heartbeat, so a process can compute its fair share of work and
  `trackyard status` can list who is alive.
* A unit of work (a destination partition, …) is held under a lease with an expiry and a
  *generation* that grows every time the lease changes hands. Progress is written only
  while the writer's generation is still the lease's (fencing): a worker paused past its
  lease expiry cannot move a position that another worker now owns.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from trackyard.store.delivery import Cursor


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    id: str
    role: str
    host: str
    pid: int
    started_ms: int
    heartbeat_ms: int


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    owner: str
    generation: int
    expires_ms: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class CoordinationTables:
    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]: ...

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    # -- processes ------------------------------------------------------------------------
    def heartbeat(self, process_id: str, role: str, host: str, pid: int) -> None:
        now = _now_ms()
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO processes (id, role, host, pid, started_ms, heartbeat_ms) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
                (process_id, role, host, pid, now, now),
            )

    def live_processes(self, within_ms: int) -> list[ProcessInfo]:
        rows = self._query(
            "SELECT id, role, host, pid, started_ms, heartbeat_ms FROM processes WHERE heartbeat_ms >= ? ORDER BY id",
            (_now_ms() - within_ms,),
        )
        return [ProcessInfo(*row) for row in rows]

    def forget_process(self, process_id: str) -> None:
        with self._transaction() as cur:
            cur.execute("DELETE FROM processes WHERE id = ?", (process_id,))
            cur.execute("UPDATE leases SET expires_ms = 0 WHERE owner = ?", (process_id,))

    def prune_processes(self, older_than_ms: int) -> None:
        with self._transaction() as cur:
            cur.execute("DELETE FROM processes WHERE heartbeat_ms < ?", (_now_ms() - older_than_ms,))

    # -- leases with generations ----------------------------------------------------------
    def acquire(self, name: str, owner: str, ttl_ms: int) -> int | None:
        """Take or renew a lease; its generation, or None while another owner holds it.

        The generation stays the same on renewal and grows when the lease changes hands
        (or is taken again after it expired)."""
        now = _now_ms()
        with self._transaction() as cur:
            rows = cur.execute(
                "INSERT INTO leases (name, owner, expires_ms, generation) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (name) DO UPDATE SET "
                "generation = CASE WHEN leases.owner = excluded.owner AND leases.expires_ms >= ? "
                "THEN leases.generation ELSE leases.generation + 1 END, "
                "owner = excluded.owner, expires_ms = excluded.expires_ms "
                "WHERE leases.owner = excluded.owner OR leases.expires_ms < ? RETURNING generation",
                (name, owner, now + ttl_ms, now, now),
            ).fetchall()
        return int(rows[0][0]) if rows else None

    def release(self, name: str, owner: str) -> None:
        with self._transaction() as cur:
            cur.execute("UPDATE leases SET expires_ms = 0 WHERE name = ? AND owner = ?", (name, owner))

    def leases(self) -> list[Lease]:
        rows = self._query("SELECT name, owner, generation, expires_ms FROM leases ORDER BY name")
        return [Lease(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

    def set_position_fenced(
        self, consumer: str, position: int, lease: str, owner: str, generation: int
    ) -> bool:
        """Save a consumer position only while `owner` holds `lease` at `generation`."""
        now = _now_ms()
        with self._transaction() as cur:
            # a no-op update rather than a SELECT: in PostgreSQL it locks the lease row until
            # commit, so a takeover cannot slip in between the check and the write
            held = cur.execute(
                "UPDATE leases SET expires_ms = expires_ms "
                "WHERE name = ? AND owner = ? AND generation = ? AND expires_ms >= ? RETURNING 1",
                (lease, owner, generation, now),
            ).fetchall()
            if not held:
                return False
            cur.execute(
                "INSERT INTO consumer_positions (consumer, position, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms",
                (consumer, position, now),
            )
        return True

    def delete_positions(self, consumers: list[str]) -> None:
        with self._transaction() as cur:
            cur.executemany("DELETE FROM consumer_positions WHERE consumer = ?", [(c,) for c in consumers])

    def consumer_positions(self) -> dict[str, int]:
        return {
            row[0]: int(row[1]) for row in self._query("SELECT consumer, position FROM consumer_positions")
        }
