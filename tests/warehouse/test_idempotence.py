"""Loads are idempotent: re-runs, crashes at any step and concurrent loaders never duplicate a row."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests import spec_events
from tests.conftest import TRACKYARD, server_env
from tests.warehouse.conftest import Log, Target, track
from trackyard.spec import now_ms
from trackyard.warehouse import service
from trackyard.warehouse.loader import CRASH_ENV

EXPECTED_PER_SCENARIO = {
    "tracks": 6,
    "identifies": 1,
    "pages": 1,
    "screens": 1,
    "groups": 1,
    "aliases": 1,
    "order_completed": 1,
    "signed_up": 1,
}


def scenario(tag: str) -> list[dict]:
    """The Spec scenario with messageIds of its own and a property new to this copy."""
    events = spec_events.scenario()
    for event in events:
        event["messageId"] = f"{event['messageId']}-{tag}"
        if event["type"] == "track":
            event["properties"][f"only_in_{tag}"] = tag
    return events


def counts(target: Target) -> dict[str, int]:
    return {table: target.count("default", table) for table in EXPECTED_PER_SCENARIO}


def test_syncing_again_loads_nothing_twice(log: Log, target: Target):
    log.append_stored(scenario("a"))
    first = target.sync(log)
    again = target.sync(log)
    assert (first.events, again.events) == (11, 0)
    assert counts(target) == EXPECTED_PER_SCENARIO


def forget_message_ids(log: Log) -> None:
    """As if the dedupe window had passed: the same messageId can enter the log again."""
    log.store.prune_dedupe(now_ms() + 10 * 86_400_000)


def test_a_message_id_repeated_in_the_log_is_loaded_once_per_table(log: Log, target: Target):
    log.append([track("Clicked", {"n": 1}, "dup-1")])
    forget_message_ids(log)
    log.append([track("Clicked", {"n": 2}, "dup-1")])  # the same batch holds both
    target.sync(log)
    forget_message_ids(log)
    log.append([track("Clicked", {"n": 3}, "dup-1")])  # a later batch repeats it
    target.sync(log)
    assert log.store.head() == 3
    assert target.query('SELECT id, n FROM "default".clicked') == [("dup-1", 1)]
    assert target.count("default", "tracks") == 1


def run_sync(data_dir: Path, name: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = server_env(data_dir, TRACKYARD_DEFAULT_WAREHOUSE="off", **env)
    return subprocess.run(
        [TRACKYARD, "warehouse", "sync", "--name", name],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def add_target(log: Log, target: Target) -> None:
    service.add_warehouse(
        log.store, target.dialect, "test", url=target.settings.get("url"), path=target.settings.get("path")
    )


# Every step on DuckDB; on PostgreSQL (the same Session.load) one kill before and one after the commit.
CRASHES = [
    ("duckdb", "after_ddl"),
    ("duckdb", "after_rows"),
    ("duckdb", "before_commit"),
    ("duckdb", "after_commit"),
    ("postgres", "after_rows"),
    ("postgres", "after_commit"),
]


@pytest.mark.parametrize(("target", "point"), CRASHES, indirect=["target"])
def test_a_load_killed_at_any_step_is_completed_by_the_next_without_duplicates(
    log: Log, target: Target, tmp_path: Path, point: str
):
    add_target(log, target)
    log.append_stored(scenario("a"))
    target.sync(log)
    log.append_stored(scenario("b"))  # new columns: the next load alters tables

    crashed = run_sync(tmp_path, "test", **{CRASH_ENV: point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    assert target.sync(log).position == log.store.head()
    assert counts(target) == {table: 2 * n for table, n in EXPECTED_PER_SCENARIO.items()}
    assert target.count("default", "users") == 1
    assert target.query('SELECT only_in_a, only_in_b FROM "default".order_completed ORDER BY id') == [
        ("a", None),
        (None, "b"),
    ]


def test_two_loaders_on_one_warehouse_load_every_event_once(log: Log, target: Target, tmp_path: Path):
    add_target(log, target)
    for part in range(4):
        log.append_stored(scenario(f"p{part}"))
    env = {"TRACKYARD_WAREHOUSE_BATCH_EVENTS": "11"}
    loaders = [
        subprocess.Popen(
            [TRACKYARD, "warehouse", "sync", "--name", "test"],
            env=server_env(tmp_path, TRACKYARD_DEFAULT_WAREHOUSE="off", **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [loader.communicate(timeout=120) for loader in loaders]
    assert [loader.returncode for loader in loaders] == [0, 0], outputs
    assert counts(target) == {table: 4 * n for table, n in EXPECTED_PER_SCENARIO.items()}
    assert target.sync(log).events == 0
