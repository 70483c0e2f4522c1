"""Lenient ISO-8601 parsing and canonical formatting for Segment timestamps.

Clients send `...Z` (JavaScript), `+00:00` with milli- or microseconds (Python), and
even unpadded dates (`2015-2-02T00:30:08.276Z`, from Segment's own docs). Everything is
reduced to integer milliseconds since the epoch; stored events carry one canonical form,
`YYYY-MM-DDTHH:MM:SS.mmmZ`, so every consumer can compare timestamps as strings.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime, timedelta, timezone

_LOOSE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})[Tt ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d+))?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = -62_135_596_800_000  # 0001-01-01
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999


def parse_ms(value: object) -> int | None:
    """Milliseconds since the epoch for an ISO-8601 string, or None when it is not one."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = _parse_loose(value)
        if parsed is None:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _parse_loose(value: str) -> datetime | None:
    match = _LOOSE.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
    # The offset stays in the tzinfo (as with fromisoformat) rather than being subtracted here:
    # shifting 0001-01-01 or 9999-12-31 by it would overflow datetime (OverflowError, a 500).
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second or 0),
            micros,
            tzinfo=timezone(offset),
        )
    except ValueError:  # an impossible date, or an offset of 24 h or more
        return None


_prefix_cache: dict[int, str] = {}


def format_ms(ms: int) -> str:
    """Canonical UTC form with milliseconds, e.g. `2025-05-01T10:00:05.180Z`.

    Events of one request share their second almost always, so the formatted
    `YYYY-MM-DDTHH:MM:SS` prefix is cached per second: strftime is the costly part.
    """
    ms = min(max(ms, _MIN_MS), _MAX_MS)
    second, millis = divmod(ms, 1000)
    prefix = _prefix_cache.get(second)
    if prefix is None:
        if len(_prefix_cache) > 4096:
            _prefix_cache.clear()
        moment = _EPOCH + timedelta(seconds=second)
        prefix = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment:%H:%M:%S}"
        _prefix_cache[second] = prefix
    return f"{prefix}.{millis:03d}Z"


@functools.lru_cache(maxsize=8192)
def canonical(value: str) -> tuple[int, str] | None:
    """(ms, canonical text) of an ISO-8601 string, memoised: a batch's events share their
    sentAt and often their timestamps, and parsing plus formatting is the costly part."""
    ms = parse_ms(value)
    return None if ms is None else (ms, format_ms(ms))


def now_ms() -> int:
    """The wall clock in ms since the epoch (time.time_ns: a tenth of datetime.now's cost)."""
    return time.time_ns() // 1_000_000
