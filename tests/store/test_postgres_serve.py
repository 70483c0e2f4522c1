"""End to end: `trackyard serve` with TRACKYARD_DATABASE_URL keeps the log in PostgreSQL."""

from __future__ import annotations

import httpx
import psycopg


def post_batch(server, message_ids: list[str]) -> httpx.Response:
    batch = [
        {"type": "track", "userId": "u-1", "event": f"Step {message_id}", "messageId": message_id}
        for message_id in message_ids
    ]
    return httpx.post(f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": batch})


def test_serve_on_postgres_stores_a_batch_in_order_and_once_across_a_restart(make_server, pg_url):
    server = make_server(database_url=pg_url).start()
    write_key = server.write_key
    response = post_batch(server, ["m-1", "m-2", "m-3"])
    assert response.status_code == 200, response.text
    assert [e["messageId"] for e in server.events()] == ["m-1", "m-2", "m-3"]
    assert [e["event"] for e in server.events()] == ["Step m-1", "Step m-2", "Step m-3"]

    server.restart()
    assert server.write_key == write_key
    response = post_batch(server, ["m-1", "m-2", "m-3", "m-4"])
    assert response.status_code == 200, response.text
    assert [e["messageId"] for e in server.events()] == ["m-1", "m-2", "m-3", "m-4"]

    assert not (server.data_dir / "trackyard.db").exists()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM log_000001").fetchone() == (4,)
