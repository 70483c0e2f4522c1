"""`trackyard status`: every live process, the leases they hold, and how far behind each
consumer of the log is."""

from __future__ import annotations

from typing import Any

from trackyard.spec import format_ms, now_ms
from trackyard.store import Store

LIVE_WITHIN_MS = 60_000


def cluster_status(store: Store) -> dict[str, Any]:
    now = now_ms()
    leases = [lease for lease in store.leases() if lease.expires_ms >= now]
    processes = [
        {
            "id": process.id,
            "role": process.role,
            "host": process.host,
            "pid": process.pid,
            "started": format_ms(process.started_ms),
            "last_heartbeat": format_ms(process.heartbeat_ms),
            "heartbeat_age_s": round((now - process.heartbeat_ms) / 1000, 1),
            "leases": sorted(lease.name for lease in leases if lease.owner == process.id),
        }
        for process in store.live_processes(LIVE_WITHIN_MS)
    ]
    head = store.head()
    return {"head": head, "processes": processes, "consumers": _consumers(store, head, now)}


def _consumers(store: Store, head: int, now: int) -> list[dict[str, Any]]:
    consumers = []
    for name, position in sorted(store.consumer_positions().items()):
        oldest = store.read_log(position, 1)
        consumers.append(
            {
                "consumer": name,
                "position": position,
                "lag": max(0, head - position),
                "oldest_unprocessed_age_s": round((now - oldest[0].received_ms) / 1000, 1) if oldest else 0.0,
            }
        )
    return consumers
