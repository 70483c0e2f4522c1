"""Lenient ISO-8601 parsing and the canonical stored form (contract §1.5, §1.9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trackyard.spec.timestamps import format_ms, parse_ms

# 2025-05-01T10:00:00.000Z in milliseconds since the epoch.
T0 = int(datetime(2025, 5, 1, 10, 0, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-05-01T10:00:00.000Z", T0),  # JavaScript toISOString
        ("2025-05-01T10:00:00Z", T0),
        ("2025-05-01T10:00:00.120Z", T0 + 120),
        ("2025-05-01T10:00:00.120z", T0 + 120),
        ("2025-05-01T10:00:00.120+00:00", T0 + 120),  # python isoformat(timespec="milliseconds")
        ("2025-05-01T10:00:00.120456+00:00", T0 + 120),  # python isoformat(): microseconds
        ("2025-05-01T10:00:00.999999+00:00", T0 + 999),  # truncated, never rounded up
        ("2025-05-01T12:00:00.000+02:00", T0),
        ("2025-05-01T12:30:00.250+02:30", T0 + 250),
        ("2025-05-01T05:00:00.000-05:00", T0),
        ("2025-05-01T12:00:00.000+0200", T0),
        ("2025-05-01T10:00:00.123456789Z", T0 + 123),  # nanoseconds
        ("2025-05-01 10:00:00Z", T0),
        ("2025-05-01T10:00:00", T0),  # no zone: UTC
    ],
)
def test_accepted_forms_reduce_to_utc_milliseconds(text: str, expected: int) -> None:
    assert parse_ms(text) == expected


def test_unpadded_date_from_segments_own_docs() -> None:
    expected = int(datetime(2015, 2, 2, 0, 30, 8, 276_000, tzinfo=UTC).timestamp() * 1000)
    assert parse_ms("2015-2-02T00:30:08.276Z") == expected
    assert parse_ms("2015-2-2T2:30:08.276+02:00") == expected
    assert format_ms(expected) == "2015-02-02T00:30:08.276Z"


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "not a timestamp at all",
        "2025-13-01T10:00:00Z",  # month 13
        "2015-2-30T00:30:08Z",  # 30 February
        "2025-05-01T25:00:00Z",
        "2015-2-02T00:30:08.276+24:00",  # offsets are less than a day
        "2025/05/01 10:00:00",
        "",
        "2025",
        "2025-05-01T10:00:00.000Z" + " " * 40,  # over the length bound
        1_746_093_600_000,  # epoch milliseconds as a number
        1_746_093_600.5,
        True,
        None,
        ["2025-05-01T10:00:00Z"],
        {"iso": "2025-05-01T10:00:00Z"},
    ],
)
def test_garbage_and_non_strings_are_rejected(value: object) -> None:
    assert parse_ms(value) is None


@pytest.mark.parametrize(
    "text",
    [
        # Unpadded forms take the lenient path; shifting these by their offset used to
        # overflow datetime and raise OverflowError (a 500 for the whole request).
        "9999-12-31T23:59:9-01:00",
        "0001-1-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
    ],
)
def test_extreme_dates_never_raise(text: str) -> None:
    parsed = parse_ms(text)
    assert isinstance(parsed, int)
    stored = format_ms(parsed)  # clamped to the representable range
    assert "0001-01-01T00:00:00.000Z" <= stored <= "9999-12-31T23:59:59.999Z"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (T0, "2025-05-01T10:00:00.000Z"),
        (T0 + 5_180, "2025-05-01T10:00:05.180Z"),
        (T0 + 7, "2025-05-01T10:00:00.007Z"),
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
        (-(10**18), "0001-01-01T00:00:00.000Z"),  # clamped
        (10**18, "9999-12-31T23:59:59.999Z"),  # clamped
    ],
)
def test_canonical_form(ms: int, text: str) -> None:
    assert format_ms(ms) == text


def test_canonical_form_round_trips_and_matches_datetime() -> None:
    # Spread over seconds, days, a leap day and both sides of the epoch, including
    # repeated seconds (the formatter caches per-second prefixes).
    values = [T0 + step * 997_331 for step in range(-400, 400)]
    values += [int(datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp() * 1000) + ms for ms in range(3)]
    for ms in values:
        text = format_ms(ms)
        expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
        assert text == expected.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
        assert parse_ms(text) == ms


def test_canonical_strings_sort_like_their_instants() -> None:
    values = sorted({T0 + step * 86_399_917 for step in range(-50, 50)})
    assert [format_ms(ms) for ms in values] == sorted(format_ms(ms) for ms in values)
