"""The loader: a consumer of the log that keeps one warehouse in step with it.

One batch at a time: open a session (which takes the warehouse's load lock), read the
position the warehouse holds, read up to `batch_events` events after it, flatten and
type them in an in-memory DuckDB, plan the schema changes against the warehouse's
tables, and in one warehouse transaction apply them, insert the rows and move the
position. The position in the warehouse is the truth: a load interrupted at any point
leaves either nothing or everything of its batch, and the next load starts where the
last committed one ended. The store keeps a copy (`warehouse:<name>`) for lag and log
retention, and the status of each sync.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from trackyard.store import Store
from trackyard.warehouse.batch import LogBatch, Unfit, arrow_page
from trackyard.warehouse.dialects import LoadResult, Session, dialect_for
from trackyard.warehouse.errors import PositionMoved
from trackyard.warehouse.plan import Limits, plan_table
from trackyard.warehouse.registry import DEFAULT_BATCH_EVENTS, SyncResult, WarehouseConfig, Warehouses
from trackyard.warehouse.tables import Naming, table_specs

log = logging.getLogger(__name__)

READ_PAGE = 20_000
CRASH_ENV = "TRACKYARD_WAREHOUSE_CRASH_AT"  # set by the crash test only: after_ddl, after_rows, ...
MAX_POSITION_RACES = 5


class Loader:
    def __init__(
        self,
        store: Store,
        config: WarehouseConfig,
        batch_events: int = DEFAULT_BATCH_EVENTS,
        lock_timeout_s: float = 0.0,
    ) -> None:
        self.store = store
        self.config = config
        self.batch_events = batch_events
        self.dialect = dialect_for(config.dialect, config.settings, lock_timeout_s)
        self.naming = Naming(self.dialect.max_identifier_length)
        self.limits = Limits(self.dialect.max_identifier_length, self.dialect.max_columns)
        self.registry = Warehouses(store)
        self.crash_at = os.environ.get(CRASH_ENV)
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, int, Future[list[pa.RecordBatch]]] | None = None

    def sync(
        self, stop: threading.Event | None = None, on_batch: Callable[[SyncResult], None] | None = None
    ) -> SyncResult:
        """Load every event committed before the call; record the outcome in the store.
        Errors are recorded and returned, not raised: the next sync tries again.
        `stop` ends the sync between batches; `on_batch` hears of each batch (progress)."""
        result = SyncResult(self.config.name, head=self.store.head())
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"warehouse-{self.config.name}")
        try:
            while stop is None or not stop.is_set():
                events, result.position, load = self._load_batch_retrying(result.head)
                if not events:
                    break
                result.events += events
                result.rows += load.rows
                result.batches += 1
                result.warnings.extend(load.warnings)
                if on_batch is not None:
                    on_batch(result)
                if result.position >= result.head:
                    break
        except Exception as exc:
            result.error = str(exc) or type(exc).__name__
            log.warning("warehouse %s: %s", self.config.name, result.error)
            self.registry.record_error(self.config.name, result.error)
            return result
        finally:
            self._pool.shutdown(cancel_futures=True)
            self._pool, self._ahead = None, None
        self.registry.record_sync(self.config.name, result.events, result.rows, result.warnings)
        return result

    def _load_batch_retrying(self, head: int) -> tuple[int, int, LoadResult]:
        for _ in range(MAX_POSITION_RACES):
            try:
                return self.load_batch(head)
            except PositionMoved:
                continue
        raise PositionMoved(f"warehouse {self.config.name}: another loader keeps moving the position")

    def load_batch(self, head: int) -> tuple[int, int, LoadResult]:
        """Load the next batch of events up to seq `head`: (events, position after, result);
        no events when the warehouse already holds everything up to `head`."""
        engine = duckdb.connect()
        try:
            with self.dialect.session(engine) as session:
                session.crash_at = self.crash_at
                position = session.position()
                self._mirror_position(position)
                batch = LogBatch(engine, self._chunks(position, min(head, position + self.batch_events)))
                if not batch.size:
                    return 0, position, LoadResult()
                self._prefetch(batch.last_seq, min(head, batch.last_seq + self.batch_events))
                result = self._load(session, batch, position)
            if self.crash_at == "after_commit":
                os.kill(os.getpid(), signal.SIGKILL)
            self._mirror_position(batch.last_seq)
            return batch.size, batch.last_seq, result
        finally:
            engine.close()

    def _chunks(self, position: int, until: int) -> list[pa.RecordBatch]:
        """The log after `position` up to seq `until` as Arrow: read ahead if it was, else now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (position, until):
            return ahead[2].result()
        return self._read(position, until)

    def _prefetch(self, position: int, until: int) -> None:
        """Read the next batch on a thread while this one loads (the read is a quarter of the work)."""
        if self._pool is not None and position < until:
            self._ahead = (position, until, self._pool.submit(self._read, position, until))

    def _read(self, position: int, until: int) -> list[pa.RecordBatch]:
        chunks = []
        while position < until:
            page = self.store.read_log(position, min(READ_PAGE, until - position))
            if not page:
                break
            chunks.append(arrow_page(page))
            position = page[-1].seq
        return chunks

    def _load(self, session: Session, batch: LogBatch, position: int) -> LoadResult:
        """Plan and load; a value that does not fit a guessed type makes its column varchar and
        the load runs again (at most once per guessed column)."""
        specs = table_specs(batch.shapes(), self._schemas(), self.naming, _uuid_ts())
        existing = session.existing_columns({spec.schema for spec in specs})
        unfit: set[tuple[tuple[str, str], str]] = set()
        while True:
            plans = [plan_table(spec, existing.get(spec.ref), batch, self.limits, unfit) for spec in specs]
            try:
                return session.load(plans, batch, expected=position)
            except Exception as exc:
                found = _unfit(batch, exc)
                if found is None or (found.table, found.column) in unfit:
                    raise
                log.info("warehouse %s: %s; loading it as varchar", self.config.name, found)
                unfit.add((found.table, found.column))

    def _mirror_position(self, position: int) -> None:
        if self.store.get_position(self.config.consumer) != position:
            self.store.set_position(self.config.consumer, position)

    def _schemas(self) -> dict[int, str]:
        return {source.id: source.slug for source in self.store.list_sources()}


def _unfit(batch: LogBatch, error: BaseException) -> Unfit | None:
    """The Unfit behind a failed load, wherever the database driver wrapped it."""
    seen: BaseException | None = error
    while seen is not None:
        found = batch.unfit(seen)
        if found is not None:
            return found
        seen = seen.__cause__ or seen.__context__
    return None


def _uuid_ts() -> str:
    """The load time, as an SQL timestamp literal (UTC)."""
    return f"TIMESTAMP '{datetime.now(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"
