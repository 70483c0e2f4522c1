"""Configuration from the environment and command-line flags.

Every command reads TRACKYARD_DATA_DIR (default ./trackyard-data) and
TRACKYARD_DATABASE_URL (a postgresql:// URL switches every table to PostgreSQL).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from trackyard.store import Store, open_store
from trackyard.store.base import DEFAULT_DEDUPE_WINDOW_S, DEFAULT_SEGMENT_ROWS
from trackyard.warehouse.registry import WarehouseConfig, builtin

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_networks(value: str) -> tuple[IPNetwork, ...]:
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()
    )


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("trackyard-data")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8088
    public_url: str | None = None
    dedupe_window_s: int = DEFAULT_DEDUPE_WINDOW_S
    segment_rows: int = DEFAULT_SEGMENT_ROWS
    sqlite_synchronous: str = "FULL"
    sqlite_busy_timeout_ms: int = 5000
    ingest_parsers: int | None = (
        None  # parser processes for batch bodies; None: one per core beyond the first
    )
    ingest_writer: str = "process"  # SQLite: appends and dedupe in a writer process, or "thread"
    trusted_proxies: tuple[IPNetwork, ...] = field(default_factory=tuple)
    role: str = "all"  # all, ingest or worker
    admin: bool = True  # serve the web app and the admin API
    lease_ttl_s: float = 15.0
    retry_max_age_s: float = 4 * 3600
    retry_backoff_base_s: float = 0.5
    retry_backoff_cap_s: float = 300.0
    archive_dir: Path | None = None
    archive_url: str | None = None
    archive_s3_endpoint: str | None = None
    archive_file_max_age_s: float = 120.0
    archive_file_max_events: int = 500_000
    archive_lease_s: float = 15.0
    archive_retention_days: float | None = None  # None: keep the archive forever
    log_retention_hours: float = 168.0
    log_retention_segments: int = 2
    replay_lease_s: float = 15.0
    default_warehouse: bool = True  # DATA_DIR/warehouse.duckdb, loaded by `serve`
    warehouse_interval_s: float = 30.0
    warehouse_batch_events: int = 25_000  # serve loads in the background: bounded memory beats throughput

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Config:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {
            "data_dir": Path(env.get("TRACKYARD_DATA_DIR", "trackyard-data")),
            "database_url": env.get("TRACKYARD_DATABASE_URL") or None,
            "public_url": env.get("TRACKYARD_PUBLIC_URL") or None,
            "dedupe_window_s": int(env.get("TRACKYARD_DEDUPE_WINDOW_S", DEFAULT_DEDUPE_WINDOW_S)),
            "segment_rows": int(env.get("TRACKYARD_SEGMENT_ROWS", DEFAULT_SEGMENT_ROWS)),
            "sqlite_synchronous": env.get("TRACKYARD_SQLITE_SYNCHRONOUS", "FULL").upper(),
            "sqlite_busy_timeout_ms": int(env.get("TRACKYARD_SQLITE_BUSY_TIMEOUT_MS", 5000)),
            "ingest_parsers": int(env["TRACKYARD_INGEST_PARSERS"])
            if env.get("TRACKYARD_INGEST_PARSERS")
            else None,
            "ingest_writer": env.get("TRACKYARD_INGEST_WRITER", "process").lower(),
            "trusted_proxies": _parse_networks(env.get("TRACKYARD_TRUSTED_PROXIES", "")),
            "lease_ttl_s": float(env.get("TRACKYARD_LEASE_TTL_S", 15)),
            "retry_max_age_s": float(env.get("TRACKYARD_RETRY_MAX_AGE_S", 4 * 3600)),
            "retry_backoff_base_s": float(env.get("TRACKYARD_RETRY_BACKOFF_BASE_S", 0.5)),
            "retry_backoff_cap_s": float(env.get("TRACKYARD_RETRY_BACKOFF_CAP_S", 300)),
            "archive_dir": Path(env["TRACKYARD_ARCHIVE_DIR"]) if env.get("TRACKYARD_ARCHIVE_DIR") else None,
            "archive_url": env.get("TRACKYARD_ARCHIVE_URL") or None,
            "archive_s3_endpoint": env.get("TRACKYARD_ARCHIVE_S3_ENDPOINT") or None,
            "archive_file_max_age_s": float(env.get("TRACKYARD_ARCHIVE_FILE_MAX_AGE_S", 120)),
            "archive_file_max_events": int(env.get("TRACKYARD_ARCHIVE_FILE_MAX_EVENTS", 500_000)),
            "archive_lease_s": float(env.get("TRACKYARD_ARCHIVE_LEASE_S", 15)),
            "archive_retention_days": float(env["TRACKYARD_ARCHIVE_RETENTION_DAYS"])
            if env.get("TRACKYARD_ARCHIVE_RETENTION_DAYS")
            else None,
            "log_retention_hours": float(env.get("TRACKYARD_LOG_RETENTION_HOURS", 168)),
            "log_retention_segments": int(env.get("TRACKYARD_LOG_RETENTION_SEGMENTS", 2)),
            "replay_lease_s": float(env.get("TRACKYARD_REPLAY_LEASE_S", 15)),
            "default_warehouse": _builtin_warehouse_wanted(env),
            "warehouse_interval_s": float(env.get("TRACKYARD_WAREHOUSE_INTERVAL_S", 30)),
            "warehouse_batch_events": int(env.get("TRACKYARD_WAREHOUSE_BATCH_EVENTS", 25_000)),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        if values["sqlite_synchronous"] not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError("TRACKYARD_SQLITE_SYNCHRONOUS must be FULL, NORMAL or EXTRA")
        if values["ingest_writer"] not in {"process", "thread"}:
            raise ValueError("TRACKYARD_INGEST_WRITER must be process or thread")
        days = values["archive_retention_days"]
        if isinstance(days, float) and days <= 0:
            raise ValueError(
                f"TRACKYARD_ARCHIVE_RETENTION_DAYS must be a positive number of days, got {days:g}; "
                "leave it unset to keep the archive forever"
            )
        return cls(**values)  # type: ignore[arg-type]

    @property
    def serves_ingest(self) -> bool:
        return self.role in ("all", "ingest")

    @property
    def runs_workers(self) -> bool:
        return self.role in ("all", "worker")

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url and self.database_url.startswith(("postgresql://", "postgres://")))

    def open_store(self) -> Store:
        options: dict[str, int | str] = {
            "segment_rows": self.segment_rows,
            "dedupe_window_s": self.dedupe_window_s,
        }
        if not self.uses_postgres:
            options["synchronous"] = self.sqlite_synchronous
            options["busy_timeout_ms"] = self.sqlite_busy_timeout_ms
        store = open_store(self.database_url, self.data_dir, **options)
        store.migrate()
        return store

    @property
    def builtin_warehouse(self) -> WarehouseConfig | None:
        """The DuckDB warehouse in the data directory, unless TRACKYARD_DEFAULT_WAREHOUSE=off."""
        return builtin(self.data_dir) if self.default_warehouse else None

    @property
    def archive_path(self) -> Path:
        """Where archive files go: TRACKYARD_ARCHIVE_DIR, else `archive` in the data directory."""
        return self.archive_dir or self.data_dir / "archive"

    def is_trusted_proxy(self, address: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)


def _builtin_warehouse_wanted(env: dict[str, str]) -> bool:
    """TRACKYARD_DEFAULT_WAREHOUSE, by default on with the embedded store only: on PostgreSQL
    every worker machine would keep a DuckDB file of its own behind one shared position."""
    default = (
        "off" if env.get("TRACKYARD_DATABASE_URL", "").startswith(("postgresql://", "postgres://")) else "on"
    )
    return env.get("TRACKYARD_DEFAULT_WAREHOUSE", default).lower() not in ("off", "0", "false")
