"""`users` and `accounts`: one row per id holding the latest value of every trait ever sent (§4.6)."""

from __future__ import annotations

from tests.warehouse.conftest import Log, Target, utc


def identify(user_id: str, message_id: str, traits: dict, received_at: str | None = None) -> dict:
    message = {"type": "identify", "userId": user_id, "messageId": message_id, "traits": traits}
    if received_at:
        message["timestamp"] = received_at
    return message


def users(target: Target) -> list[tuple]:
    return target.query('SELECT id, email, plan, logins FROM "default".users ORDER BY id')


def test_identifies_of_one_batch_merge_into_the_latest_traits(log: Log, target: Target):
    log.append(
        [
            identify("u1", "i1", {"email": "old@example.com", "plan": "free", "logins": 1}),
            identify("u2", "i2", {"email": "two@example.com"}),
            identify("u1", "i3", {"plan": "pro"}),  # omits email and logins: they stay
            identify("u1", "i4", {"logins": 3, "email": None}),  # a null is no new value
        ]
    )
    target.sync(log)
    assert users(target) == [("u1", "old@example.com", "pro", 3), ("u2", "two@example.com", None, None)]
    assert target.count("default", "identifies") == 4


def test_later_batches_update_only_the_traits_they_carry(log: Log, target: Target):
    log.append([identify("u1", "i1", {"email": "a@example.com", "plan": "free", "logins": 1})])
    target.sync(log)
    log.append([identify("u1", "i2", {"plan": "team"})], received_at="2026-11-29T09:00:00.000Z")
    target.sync(log)
    log.append([identify("u1", "i3", {"email": "b@example.com", "company": {"name": "Initech"}})])
    target.sync(log)

    assert users(target) == [("u1", "b@example.com", "team", 1)]
    assert target.query('SELECT company_name FROM "default".users') == [("Initech",)]
    assert target.query('SELECT received_at FROM "default".users') == [(utc("2026-11-28T10:00:05.300Z"),)]
    assert target.count("default", "users") == 1


def test_accounts_keep_the_latest_traits_of_each_group(log: Log, target: Target):
    group = {"type": "group", "userId": "u1", "groupId": "g1"}
    log.append(
        [
            {**group, "messageId": "g-1", "traits": {"name": "Initech", "employees": 300}},
            {**group, "messageId": "g-2", "traits": {"employees": 329}},
        ]
    )
    target.sync(log)
    log.append([{**group, "messageId": "g-3", "traits": {"plan": "enterprise"}}])
    target.sync(log)

    assert target.query('SELECT id, name, employees, plan FROM "default".accounts') == [
        ("g1", "Initech", 329, "enterprise")
    ]
    assert target.count("default", "groups") == 3


def test_identify_without_user_id_lands_in_identifies_only(log: Log, target: Target):
    log.append([{"type": "identify", "anonymousId": "anon", "messageId": "i1", "traits": {"email": "x@y.z"}}])
    target.sync(log)
    assert target.count("default", "identifies") == 1
    assert "users" not in target.tables("default") or target.count("default", "users") == 0
