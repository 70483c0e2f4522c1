"""The loader reads the log as columns (`Store.read_log_columns`): the same events as
`read_log`, in seq order, across segments, from both stores."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from trackyard.store import LogRecord, Store
from trackyard.store.postgres import PostgresStore
from trackyard.store.sqlite import SQLiteStore
from trackyard.warehouse.batch import arrow_page

SEGMENT_ROWS = 4


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "trackyard.db", segment_rows=SEGMENT_ROWS)
    else:
        opened = PostgresStore(request.getfixturevalue("pg_url"), segment_rows=SEGMENT_ROWS)
    opened.migrate()
    yield opened
    opened.close()


def fill(store: Store, events: int) -> None:
    """Events of two sources, appended a few at a time so that they span several segments."""
    sources = [store.create_source(name, f"wk-{name}").id for name in ("web", "ios")]
    for first in range(0, events, 3):
        store.append(
            [
                LogRecord(sources[n % 2], f"m{n}", 0, "track", orjson.dumps({"messageId": f"m{n}", "n": n}))
                for n in range(first, min(events, first + 3))
            ]
        )


@pytest.mark.parametrize(("after", "limit"), [(0, 100), (0, 5), (3, 6), (9, 1), (13, 10), (14, 10)])
def test_columns_hold_what_read_log_gives(store: Store, after: int, limit: int):
    fill(store, 14)
    events = store.read_log(after, limit)
    page = store.read_log_columns(after, limit)
    assert list(page.seqs) == [e.seq for e in events]
    assert list(page.source_ids) == [e.source_id for e in events]
    assert [bytes(body) for body in page.bodies] == [e.body for e in events]


def test_a_page_becomes_one_arrow_batch_of_the_same_bodies(store: Store):
    fill(store, 10)
    batch = arrow_page(store.read_log_columns(2, 7))
    assert batch.column("seq").to_pylist() == list(range(3, 10))
    assert [orjson.loads(body)["n"] for body in batch.column("body").to_pylist()] == list(range(2, 9))
