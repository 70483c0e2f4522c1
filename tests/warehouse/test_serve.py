"""The promise end to end: events sent to `trackyard serve` are queryable in SQL, in Segment's layout,
without any command (DuckDB in the data directory), and after `warehouse add postgres` + `sync`."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import httpx
import orjson
import psycopg

from tests import spec_events
from tests.conftest import Server

TRACKS_BY_EVENT = [
    ("Checkout Started", 1),
    ("Order Completed", 1),
    ("Product Added", 1),
    ("Product Viewed", 1),
    ("Products Searched", 1),
    ("Signed Up", 1),
]
BY_EVENT = 'SELECT event_text, count(*) FROM "default".tracks GROUP BY 1 ORDER BY 1'


def send_scenario(server: Server) -> None:
    response = httpx.post(
        f"{server.url}/v1/batch",
        content=orjson.dumps({"batch": spec_events.scenario()}),
        auth=(server.write_key, ""),
        timeout=15,
    )
    assert response.status_code == 200, response.text


def query_when_loaded(path: Path, sql: str, timeout_s: float = 60.0) -> list[tuple]:
    """Query the DuckDB file as a user's shell would, read-only, once the loader has put the rows in."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with duckdb.connect(str(path), read_only=True) as conn:
                return conn.execute(sql).fetchall()
        except (duckdb.IOException, duckdb.CatalogException):  # not there yet, or being loaded
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_events_sent_to_serve_are_queryable_in_duckdb_and_in_postgres(make_server, warehouse_pg_url):
    server = make_server(TRACKYARD_WAREHOUSE_INTERVAL_S="0.5").start()
    send_scenario(server)

    warehouse = server.data_dir / "warehouse.duckdb"
    assert query_when_loaded(warehouse, BY_EVENT) == TRACKS_BY_EVENT
    assert query_when_loaded(warehouse, 'SELECT id, email FROM "default".users') == [
        ("97980cfea0067", "peter@example.com")
    ]
    status = orjson.loads(server.cli("warehouse", "status", "--json").stdout.splitlines()[0])
    assert (status["name"], status["builtin"], status["events_loaded"], status["lag"]) == (
        "default",
        True,
        11,
        0,
    )

    server.cli("warehouse", "add", "postgres", "--name", "team", "--url", warehouse_pg_url)
    synced = server.cli("warehouse", "sync", "--name", "team")
    assert "team: up to date" in synced.stdout
    with psycopg.connect(warehouse_pg_url) as conn:
        assert conn.execute(BY_EVENT).fetchall() == TRACKS_BY_EVENT
        assert conn.execute('SELECT name, url FROM "default".pages').fetchall() == [
            ("Pricing", "https://shop.example/pricing")
        ]
    listed = [orjson.loads(line) for line in server.cli("warehouse", "list", "--json").stdout.splitlines()]
    assert [(w["name"], w["dialect"]) for w in listed] == [("default", "duckdb"), ("team", "postgres")]
    assert all("password" not in w["target"] for w in listed)
