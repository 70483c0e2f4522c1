"""A column a PostgreSQL view uses cannot change type (§4.9): the load goes on, no value is lost."""

from __future__ import annotations

import psycopg

from tests.warehouse.conftest import Log, Target
from trackyard.warehouse.registry import Warehouses


def page(message_id: str, load_time: object) -> dict:
    return {
        "type": "page",
        "name": "Home",
        "anonymousId": "a",
        "messageId": message_id,
        "properties": {"url": "https://shop.example/", "load_time": load_time},
    }


def test_a_column_used_by_a_view_keeps_its_type_and_gains_a_varchar_companion(
    log: Log, warehouse_pg_url: str
):
    target = Target("postgres", {"url": warehouse_pg_url}, url=warehouse_pg_url)
    log.append([page("p1", 120)])
    target.sync(log)
    with psycopg.connect(warehouse_pg_url) as conn:  # what dbt's segment package does
        conn.execute(
            'CREATE VIEW "default".page_views AS SELECT id, load_time, timestamp FROM "default".pages'
        )

    log.append([page("p2", 95.5), page("p3", "slow")])
    result = target.sync(log)

    columns = target.columns("default", "pages")
    assert (columns["load_time"], columns["load_time__varchar"]) == ("integer", "varchar")
    assert target.query('SELECT id, load_time, load_time__varchar FROM "default".pages ORDER BY id') == [
        ("p1", 120, "120"),
        ("p2", None, "95.5"),
        ("p3", None, "slow"),
    ]
    assert target.query('SELECT count(*) FROM "default".page_views') == [(3,)]
    assert any("load_time" in warning for warning in result.warnings)
    assert Warehouses(log.store).status("test").warnings == result.warnings

    log.append([page("p4", 7), page("p5", "fast")])
    target.sync(log)
    assert target.query(
        "SELECT id, load_time, load_time__varchar FROM \"default\".pages WHERE id > 'p3' ORDER BY id"
    ) == [
        ("p4", 7, "7"),
        ("p5", None, "fast"),
    ]
