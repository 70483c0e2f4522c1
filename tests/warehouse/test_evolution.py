"""Schema evolution over a stream: columns appear, types widen, no value is ever lost (§4.4, §4.5)."""

from __future__ import annotations

import orjson

from tests.warehouse.conftest import Log, Target, track, utc

LONG_KEY = "k" * 300


def columns_of(target: Target, table: str) -> dict[str, str]:
    return target.columns("default", table)


def values(target: Target, table: str, column: str) -> list:
    return [row[0] for row in target.query(f'SELECT "{column}" FROM "default"."{table}" ORDER BY id')]


def test_properties_become_columns_on_their_first_non_null_value_and_types_widen(log: Log, target: Target):
    log.append(
        [
            track(
                "Score",
                {
                    "points": 1,
                    "flag": True,
                    "when": "2026-11-01T08:30:00.000Z",
                    "nested": {"deep": {"x": 1}, "label": "n"},
                    "tags": ["a", "b"],
                    "nothing": None,
                },
                "m1",
            )
        ]
    )
    target.sync(log)
    columns = columns_of(target, "score")
    assert (columns["points"], columns["flag"], columns["_when"]) == ("integer", "boolean", "timestamp")
    assert (columns["nested_deep_x"], columns["nested_label"], columns["tags"]) == (
        "integer",
        "varchar",
        "varchar",
    )
    assert "nothing" not in columns
    assert orjson.loads(values(target, "score", "tags")[0]) == ["a", "b"]

    log.append([track("Score", {"points": 2.5, "flag": 7, "nothing": "now", "added": "x"}, "m2")])
    target.sync(log)
    columns = columns_of(target, "score")
    assert (columns["points"], columns["flag"], columns["nothing"], columns["added"]) == (
        "float",
        "integer",
        "varchar",
        "varchar",
    )
    assert values(target, "score", "points") == [1.0, 2.5]
    assert values(target, "score", "flag") == [1, 7]  # true became 1

    log.append([track("Score", {"points": "lots", "flag": "maybe", "when": "yesterday"}, "m3")])
    target.sync(log)
    columns = columns_of(target, "score")
    assert (columns["points"], columns["flag"], columns["_when"]) == ("varchar", "varchar", "varchar")
    points = values(target, "score", "points")
    assert [float(p) for p in points[:2]] == [1.0, 2.5] and points[2] == "lots"
    assert values(target, "score", "flag") == ["1", "7", "maybe"]
    when = values(target, "score", "_when")
    assert utc(when[0]) == utc("2026-11-01T08:30:00Z") and when[1:] == [None, "yesterday"]


def test_one_batch_of_mixed_kinds_takes_the_wider_type(log: Log, target: Target):
    log.append(
        [
            track("Mixed", {"n": 1, "b": True, "seen": "2026-11-28T10:00:00Z", "big": 5}, "m1"),
            track(
                "Mixed", {"n": 1.5, "b": 2, "seen": "2026-11-28T11:00:00Z", "big": 18446744073709551615}, "m2"
            ),
            track("Mixed", {"n": 3, "b": False, "seen": "not a time", "big": 6}, "m3"),
        ]
    )
    target.sync(log)
    columns = columns_of(target, "mixed")
    assert (columns["n"], columns["b"], columns["seen"], columns["big"]) == (
        "float",
        "integer",
        "varchar",
        "varchar",
    )
    assert values(target, "mixed", "n") == [1.0, 1.5, 3.0]
    assert values(target, "mixed", "b") == [1, 2, 0]
    assert values(target, "mixed", "seen") == ["2026-11-28T10:00:00Z", "2026-11-28T11:00:00Z", "not a time"]
    assert values(target, "mixed", "big") == ["5", "18446744073709551615", "6"]


def test_a_guessed_timestamp_that_a_later_value_breaks_loads_as_varchar(log: Log, target: Target):
    times = [track("Visit", {"seen": f"2026-11-28T10:00:{n:02d}Z"}, f"m{n:02d}") for n in range(20)]
    log.append([*times, track("Visit", {"seen": "soon"}, "m99")])
    target.sync(log)
    assert columns_of(target, "visit")["seen"] == "varchar"
    assert values(target, "visit", "seen")[-1] == "soon" and len(values(target, "visit", "seen")) == 21


def test_unicode_and_sql_hostile_names_load_under_safe_names(log: Log, target: Target):
    log.append(
        [
            track(
                "Café ☕ Ordered",
                {
                    "select": 1,
                    '"quote"': "q",
                    "1st": "first",
                    LONG_KEY: "long",
                    "prénom": "Zoë",
                    "🙂": "lost",
                },
                "m1",
            )
        ]
    )
    target.sync(log)
    assert "caf_ordered" in target.tables("default")
    columns = columns_of(target, "caf_ordered")
    assert {"_select", "quote", "_1st", "pr_nom"} <= set(columns)
    long = [name for name in columns if name.startswith("kkkk")]
    limit = 255 if target.dialect == "duckdb" else 63
    assert len(long) == 1 and len(long[0]) <= limit
    row = target.query(
        f'SELECT _select, quote, _1st, pr_nom, "{long[0]}", event_text FROM "default".caf_ordered'
    )
    assert row == [(1, "q", "first", "Zoë", "long", "Café ☕ Ordered")]


def test_an_event_named_like_a_built_in_table_gets_its_own_table(log: Log, target: Target):
    log.append(
        [
            track("Pages", {"count": 3}, "t1"),
            {
                "type": "page",
                "name": "Home",
                "anonymousId": "a",
                "messageId": "p1",
                "properties": {"url": "/"},
            },
        ]
    )
    target.sync(log)
    assert {"_pages", "pages", "tracks"} <= target.tables("default")
    assert target.query('SELECT event, event_text, count FROM "default"._pages') == [("_pages", "Pages", 3)]
    assert target.query('SELECT event FROM "default".tracks') == [("_pages",)]
    assert target.query('SELECT id, name, url FROM "default".pages') == [("p1", "Home", "/")]


def test_properties_named_like_reserved_columns_are_dropped(log: Log, target: Target):
    log.append(
        [track("Clash", {"userId": "spoof", "timestamp": "x", "event": "y", "id": "z", "ok": 1}, "m1")]
    )
    target.sync(log)
    assert target.query('SELECT id, event, timestamp, ok FROM "default".clash') == [
        ("m1", "clash", utc("2026-11-28T10:00:00.000Z"), 1)
    ]
    assert "user_id" not in columns_of(target, "clash")
