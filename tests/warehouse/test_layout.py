"""Segment's layout: the tables, columns and types a data engineer finds (contract §4.1–§4.8)."""

from __future__ import annotations

import orjson

from tests import spec_events
from tests.warehouse.conftest import Log, Target, utc
from trackyard.spec import Envelope, normalise, parse_ms

# §1.13: the browser track call as analytics-next sends it.
BROWSER_TRACK = {
    "timestamp": "2025-05-01T10:00:00.000Z",
    "integrations": {},
    "type": "track",
    "event": "Order Completed",
    "properties": {
        "order_id": "50314b8e",
        "total": 27.5,
        "coupon": "hasbros",
        "products": [{"product_id": "507f", "price": 19, "quantity": 1}],
    },
    "context": {
        "page": {
            "path": "/checkout",
            "referrer": "",
            "search": "",
            "title": "Pay",
            "url": "https://shop.example/checkout",
        },
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
        "locale": "en-US",
        "timezone": "Europe/Amsterdam",
        "library": {"name": "analytics.js", "version": "next-1.84.1"},
    },
    "messageId": "ajs-next-1714557600000-4f3c",
    "anonymousId": "a1b2",
    "userId": None,
    "writeKey": "WK",
    "sentAt": "2025-05-01T10:00:00.120Z",
    "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
}

# §4.7a: exactly these columns and types.
TRACKS_COLUMNS = {
    "id": "varchar",
    "anonymous_id": "varchar",
    "event": "varchar",
    "event_text": "varchar",
    "received_at": "timestamp",
    "sent_at": "timestamp",
    "timestamp": "timestamp",
    "original_timestamp": "timestamp",
    "context_page_path": "varchar",
    "context_page_referrer": "varchar",
    "context_page_search": "varchar",
    "context_page_title": "varchar",
    "context_page_url": "varchar",
    "context_user_agent": "varchar",
    "context_locale": "varchar",
    "context_timezone": "varchar",
    "context_library_name": "varchar",
    "context_library_version": "varchar",
    "context_ip": "varchar",
    "uuid_ts": "timestamp",
}
ORDER_COMPLETED_COLUMNS = {
    **TRACKS_COLUMNS,
    "order_id": "varchar",
    "total": "float",
    "coupon": "varchar",
    "products": "varchar",
}

DBT_PAGES_COLUMNS = {
    "id": "varchar",
    "anonymous_id": "varchar",
    "user_id": "varchar",
    "received_at": "timestamp",
    "sent_at": "timestamp",
    "timestamp": "timestamp",
    "url": "varchar",
    "path": "varchar",
    "title": "varchar",
    "search": "varchar",
    "referrer": "varchar",
    "context_campaign_source": "varchar",
    "context_campaign_medium": "varchar",
    "context_campaign_name": "varchar",
    "context_campaign_term": "varchar",
    "context_campaign_content": "varchar",
    "context_ip": "varchar",
    "context_user_agent": "varchar",
}


def stored_browser_track() -> dict:
    received = parse_ms("2025-05-01T10:00:05.300Z")
    assert received is not None
    envelope = Envelope(
        received_ms=received, client_ip="203.0.113.9", client_endpoint=True, channel="browser"
    )
    return normalise(orjson.loads(orjson.dumps(BROWSER_TRACK)), envelope)


def test_the_worked_example_gives_exactly_segments_tables_columns_and_types(log: Log, target: Target):
    log.append_stored([stored_browser_track()], source="shop_web")
    target.sync(log)

    assert target.tables("shop_web") == {"tracks", "order_completed"}
    assert target.columns("shop_web", "tracks") == TRACKS_COLUMNS  # no user_id: it was null
    assert target.columns("shop_web", "order_completed") == ORDER_COMPLETED_COLUMNS
    row = target.query(
        "SELECT id, event, event_text, total, products, received_at, timestamp, original_timestamp, sent_at, "
        "context_ip, context_page_referrer FROM shop_web.order_completed"
    )
    (message_id, event, event_text, total, products, received, timestamp, original, sent, ip, referrer) = row[
        0
    ]
    assert (message_id, event, event_text, total) == (
        "ajs-next-1714557600000-4f3c",
        "order_completed",
        "Order Completed",
        27.5,
    )
    assert orjson.loads(products) == BROWSER_TRACK["properties"]["products"]
    assert received == utc("2025-05-01T10:00:05.300Z")
    assert timestamp == utc("2025-05-01T10:00:05.180Z")  # skew-corrected
    assert original == utc("2025-05-01T10:00:00.000Z")
    assert sent == utc("2025-05-01T10:00:00.120Z")
    assert (ip, referrer) == ("203.0.113.9", "")
    assert target.query("SELECT event, event_text FROM shop_web.tracks") == [
        ("order_completed", "Order Completed")
    ]


def test_the_spec_scenario_fills_every_segment_table(log: Log, target: Target):
    log.append_stored(spec_events.scenario())
    target.sync(log)

    assert target.tables("default") == {
        "tracks",
        "identifies",
        "users",
        "pages",
        "screens",
        "groups",
        "accounts",
        "aliases",
        "product_viewed",
        "product_added",
        "checkout_started",
        "order_completed",
        "products_searched",
        "signed_up",
    }
    counts = {table: target.count("default", table) for table in target.tables("default")}
    assert counts["tracks"] == 6 and counts["users"] == 1 and counts["accounts"] == 1
    assert all(count == 1 for table, count in counts.items() if table != "tracks")

    users = target.columns("default", "users")
    assert "anonymous_id" not in users and {"id", "received_at", "uuid_ts", "email", "address_city"} <= set(
        users
    )
    assert target.query('SELECT id, email, logins, created_at FROM "default".users') == [
        ("97980cfea0067", "peter@example.com", 5, utc("2026-01-15T09:30:00.000Z"))
    ]
    assert target.query('SELECT group_id, employees FROM "default".groups') == [
        ("0e8c78ea9d97a7b8185e8632", 329)
    ]
    assert target.query('SELECT id, name, industry FROM "default".accounts') == [
        ("0e8c78ea9d97a7b8185e8632", "Initech", "Technology")
    ]
    assert target.query('SELECT previous_id, user_id FROM "default".aliases') == [
        ("507f191e810c19729de860ea", "97980cfea0067")
    ]
    assert target.query('SELECT name, variation, context_app_version FROM "default".screens') == [
        ("Home", "blue", "3.2.1")
    ]
    signed_up = target.columns("default", "signed_up")
    assert (signed_up["trial"], signed_up["seats"], signed_up["plan"]) == ("boolean", "integer", "varchar")


def test_columns_that_segment_does_not_load_are_absent(log: Log, target: Target):
    log.append_stored(spec_events.scenario())
    target.sync(log)

    for table in target.tables("default"):
        columns = set(target.columns("default", table))
        assert not columns & {"type", "channel", "version", "integrations", "write_key", "metadata"}
        assert not [c for c in columns if c.startswith(("integrations_", "metadata_", "_metadata"))]


def test_pages_holds_every_column_dbt_reads_with_timestamp_types_from_the_first_page(
    log: Log, target: Target
):
    # An anonymous visitor without a campaign: no user_id, no context_campaign_* values yet.
    log.append(
        [
            {
                "type": "page",
                "name": "Home",
                "anonymousId": "anon-1",
                "messageId": "page-1",
                "properties": {"url": "https://shop.example/", "path": "/", "title": "Shop", "referrer": ""},
                "context": {"userAgent": "Mozilla/5.0"},
                "timestamp": "2026-11-28T10:00:00.000Z",
            }
        ]
    )
    target.sync(log)

    columns = target.columns("default", "pages")
    assert {name: columns.get(name) for name in DBT_PAGES_COLUMNS} == DBT_PAGES_COLUMNS
    assert target.query('SELECT user_id, context_campaign_source, url FROM "default".pages') == [
        (None, None, "https://shop.example/")
    ]
