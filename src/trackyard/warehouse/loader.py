"""The loader: a consumer of the log that keeps one warehouse in step with it.

One batch at a time: open a session (which takes the warehouse's load lock), read the
position the warehouse holds, read up to `batch_events` events after it, flatten and
type them in an in-memory DuckDB, plan the schema changes against the warehouse's
tables, and in one warehouse transaction apply them, insert the rows and move the
position. The position in the warehouse is the truth: a load interrupted at any point
leaves either nothing or everything of its batch, and the next load starts where the
last committed one ended. The store keeps a copy (`warehouse:<name>`) for lag and log
retention, and the status of each sync.

While a batch loads, a thread reads the next one from the log, copies it into an
in-memory DuckDB of its own and finds its shapes, so that the two cores of a small machine
both work. That engine works on one thread while the other loads (two engines of one thread
per core each would be oversubscribed), and gets all of them back when it loads: the next
load attaches the warehouse to it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
# The batch engine's memory: about 4 KB per ~1 KB event, between 512 MB and 2 GB. A cap, not
# a reservation: a load of 25,000 events uses far less, but once the warehouse holds a few
# hundred thousand rows a 128 MB cap fails its INSERTs (out of memory).
ENGINE_KB_PER_EVENT = 4
MIN_ENGINE_MB = 512
MAX_ENGINE_MB = 2048
SMALL_BATCH_EVENTS = 50_000
# The engine preparing the next batch while one loads: one thread (1M bench events, three
# alternating pairs: 29.3 against 32.8 µs of CPU per event, wall time 2 % less).
PREPARING_THREADS = 1


@dataclass(frozen=True)
class EngineLimits:
    """What the in-memory DuckDB of a batch may use; it spills to disk beyond `memory_limit`.
    Sized by the batch: serve's small background batches stay small (one thread)."""

    memory_limit: str
    threads: int

    @classmethod
    def for_batch(cls, batch_events: int) -> EngineLimits:
        megabytes = min(MAX_ENGINE_MB, max(MIN_ENGINE_MB, batch_events * ENGINE_KB_PER_EVENT // 1000))
        return cls(f"{megabytes}MB", 1 if batch_events <= SMALL_BATCH_EVENTS else os.cpu_count() or 1)


@dataclass(frozen=True)
class _Ahead:
    """The next batch, being prepared on the loader's thread."""

    position: int
    until: int
    future: Future[LogBatch]


_ENGINES = itertools.count(1)


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
        self._syncing = False
        self.engine = EngineLimits.for_batch(batch_events)
        self._ahead: _Ahead | None = None

    def sync(
        self, stop: threading.Event | None = None, on_batch: Callable[[SyncResult], None] | None = None
    ) -> SyncResult:
        """Load every event committed before the call; record the outcome in the store.
        Errors are recorded and returned, not raised: the next sync tries again.
        `stop` ends the sync between batches; `on_batch` hears of each batch (progress)."""
        result = SyncResult(self.config.name, head=self.store.head())
        self._syncing = True
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
            self._syncing = False
            self._discard_ahead()
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
        ahead, self._ahead = self._ahead, None
        engine = self._loading(ahead.future.result().conn) if ahead is not None else self._engine()
        try:
            with self.dialect.session(engine) as session:
                session.crash_at = self.crash_at
                position = session.position()
                self._mirror_position(position)
                until = min(head, position + self.batch_events)
                if ahead is not None and (ahead.position, ahead.until) == (position, until):
                    batch = ahead.future.result()
                else:
                    batch = self._prepare(self._read(position, until), engine)
                if not batch.size:
                    return 0, position, LoadResult()
                self._prepare_next(batch.last_seq, min(head, batch.last_seq + self.batch_events))
                result = self._load(session, batch, position)
            if self.crash_at == "after_commit":
                os.kill(os.getpid(), signal.SIGKILL)
            self._mirror_position(batch.last_seq)
            return batch.size, batch.last_seq, result
        finally:
            engine.close()

    def _engine(self, threads: int | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB for one batch, bounded in memory and threads. Beyond its memory it
        spills to a directory of its own, which DuckDB creates when needed and removes on close."""
        spill = Path(tempfile.gettempdir()) / f"trackyard-warehouse-{os.getpid()}-{next(_ENGINES)}"
        return duckdb.connect(
            config={
                "memory_limit": self.engine.memory_limit,
                "threads": threads or self.engine.threads,
                "temp_directory": str(spill),
            }
        )

    def _loading(self, engine: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """The engine of a batch prepared ahead (on one thread), with all its threads to load."""
        engine.execute(f"SET threads = {self.engine.threads}").fetchall()
        return engine

    def _prepare(
        self, chunks: list[pa.RecordBatch], engine: duckdb.DuckDBPyConnection | None = None
    ) -> LogBatch:
        """Pages of the log in an in-memory DuckDB, with their shapes (without `engine`: in an
        engine of its own, of one thread, beside the load of the batch before it)."""
        batch = LogBatch(engine or self._engine(threads=PREPARING_THREADS), chunks)
        if batch.size:
            batch.shapes()
        return batch

    def _prepare_next(self, position: int, until: int) -> None:
        """Read the next batch and shape it on the reader thread while this one loads (1M bench
        events: 16.1–16.6 s against 17.8–18.3 s with the read on this thread, before the load)."""
        if self._syncing and position < until:
            future = _reader().submit(lambda: self._prepare(self._read(position, until)))
            self._ahead = _Ahead(position, until, future)

    def _discard_ahead(self) -> None:
        """Close the engine of a batch prepared but not loaded (the sync stopped or failed)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead.future.cancel():
            return
        if ahead.future.exception() is None:  # waits for it to finish
            ahead.future.result().conn.close()

    def _read(self, position: int, until: int) -> list[pa.RecordBatch]:
        chunks = []
        while position < until:
            page = self.store.read_log_columns(position, min(READ_PAGE, until - position))
            if not page.seqs:
                break
            chunks.append(arrow_page(page))
            position = page.seqs[-1]
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


@functools.cache
def _reader() -> ThreadPoolExecutor:
    """The thread that reads and shapes the next batch, one for the life of the process: it
    opens its own connection to the store, which a thread per sync would leave open each time."""
    return ThreadPoolExecutor(1, thread_name_prefix="warehouse-reader")


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
