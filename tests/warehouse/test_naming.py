"""Names as Segment's warehouses make them (contract §4.3)."""

from __future__ import annotations

import pytest

from trackyard.warehouse.naming import safe_identifier, snake_case
from trackyard.warehouse.tables import RESERVED_COLUMNS, Naming

# Every reference vector of go-snakecase's test file, as listed in the contract.
SNAKE_VECTORS = [
    ("sampleText", "sample_text"),
    ("sample-text", "sample_text"),
    ("sample text", "sample_text"),
    ("sample___text", "sample_text"),
    ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"),
    ("something.com", "something_com"),
    ("$something%", "something"),
    ("CStringRef", "cstring_ref"),
    ("2FA Enabled", "2fa_enabled"),
    ("_5TEst", "5test"),
    ("f_pX9", "f_p_x9"),
    ("samPLE text", "sam_ple_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    # the contract's examples
    ("Order Completed", "order_completed"),
    ("accountType", "account_type"),
    ("context userAgent", "context_user_agent"),
    # already snake_case: unchanged
    ("already_snake_2", "already_snake_2"),
]


@pytest.mark.parametrize(("name", "expected"), SNAKE_VECTORS)
def test_snake_case_matches_go_snakecase(name, expected):
    assert snake_case(name) == expected


def test_non_ascii_bytes_separate_words_and_vanish():
    assert snake_case("prix €uro") == "prix_uro"
    assert snake_case("日本語") == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [("3doctors", "_3doctors"), ("101 Account Update", "_101_account_update"), ("1st", "_1st")],
)
def test_names_starting_with_a_digit_get_an_underscore(name, expected):
    assert safe_identifier(snake_case(name), 63) == expected


@pytest.mark.parametrize("word", ["select", "group", "user", "open", "order", "default", "table", "offset"])
def test_sql_reserved_words_get_an_underscore(word):
    assert safe_identifier(word, 63) == f"_{word}"


def test_long_names_are_bounded_per_dialect_and_stay_distinct():
    first, second = "k" * 300 + "a", "k" * 300 + "b"
    for limit in (63, 255):
        a, b = safe_identifier(first, limit), safe_identifier(second, limit)
        assert len(a.encode()) <= limit and len(b.encode()) <= limit
        assert a != b
        assert a == safe_identifier(first, limit)  # deterministic


def test_properties_named_like_reserved_columns_are_not_loaded():
    naming = Naming(63)
    for name in ("userId", "id", "receivedAt", "timestamp", "event", "event_text", "context_ip", "uuid_ts"):
        assert naming.column((name,), RESERVED_COLUMNS) is None
    assert naming.column(("plan",), RESERVED_COLUMNS) == "plan"


def test_event_tables_never_take_a_built_in_table_name():
    naming = Naming(63)
    assert naming.event_table("Order Completed") == "order_completed"
    assert naming.event_table("Pages") == "_pages"
    assert naming.event_table("users") == "_users"
    assert naming.event_table("Select") == "_select"
    assert naming.event_table("2FA Enabled") == "_2fa_enabled"
    assert naming.event_table("¡¿") is None
