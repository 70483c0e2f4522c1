"""The tables of a warehouse's source schemas with their row counts (the Warehouses page), in both dialects."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.warehouse.conftest import Log, Target, track
from trackyard.warehouse.dialects import TableRows
from trackyard.warehouse.dialects.duckdb_file import DuckDBDialect
from trackyard.warehouse.errors import WarehouseBusy
from trackyard.warehouse.registry import Warehouses
from trackyard.warehouse.service import warehouse_tables


def listed(log: Log) -> list[tuple[str, str, int]]:
    return [(t["schema"], t["table"], t["rows"]) for t in warehouse_tables(log.store, None, "test")]


def test_the_tables_of_every_source_schema_are_listed_with_their_row_counts(log: Log, target: Target):
    Warehouses(log.store).add("test", target.dialect, target.settings)
    log.source("shop")
    log.source("app")
    assert listed(log) == []  # nothing loaded yet

    log.append([track("Order Completed", {"total": 9.5}, "o1"), track("Signed Up", {}, "s1")], source="shop")
    log.append([track("Order Completed", {"total": 12}, "o2")], source="shop")
    log.append([track("Signed Up", {}, "s2")], source="app")
    target.sync(log)

    assert listed(log) == [
        ("app", "signed_up", 1),
        ("app", "tracks", 1),
        ("shop", "order_completed", 2),
        ("shop", "signed_up", 1),
        ("shop", "tracks", 3),
    ]
    assert all(rows == target.count(schema, table) for schema, table, rows in listed(log))

    log.append([track("Signed Up", {}, "s3")], source="app")
    target.sync(log)  # listing released the warehouse: the next load goes in
    assert listed(log)[:2] == [("app", "signed_up", 2), ("app", "tracks", 2)]


def test_a_duckdb_file_held_by_a_load_is_not_opened_and_the_listing_says_it_is_busy(tmp_path: Path):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as loading:
        loading.execute("CREATE SCHEMA shop; CREATE TABLE shop.tracks (id VARCHAR)")
        with pytest.raises(WarehouseBusy, match="open in another process"):
            DuckDBDialect(path, lock_timeout_s=0.3).tables(["shop"])
    assert DuckDBDialect(path).tables(["shop"]) == [TableRows("shop", "tracks", 0)]
