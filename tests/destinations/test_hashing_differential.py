"""Differential test: our normalise-and-hash helpers against Meta's official SDK
(PyPI `facebook-business`, `facebook_business.adobjects.serverside.normalize.Normalize`,
the code `UserData` hashes with).

Where both implement Meta's rule the hashes must be equal. Where we follow Meta's
documented rule more closely than the SDK, or refuse a value the SDK would hash, each
difference is listed below with both results, so a change on either side shows up:
* names: Meta says "no punctuation"; the SDK only trims and lower-cases;
* states: we map US state names to their code ("Texas" → "tx"), as Segment does; the SDK
  lower-cases the name;
* zip codes: the SDK keeps what precedes the first dash, which truncates non-US
  postcodes ("01310-100" → "01310"); we cut only US ZIP+4;
* country: the SDK raises on anything but an assigned alpha-2 code; we also understand
  the common names of the US and the UK;
* phones: both strip symbols and leading zeros; we also refuse numbers shorter than 7 or
  longer than 15 digits (E.164) where the SDK's pattern accepts some, and neither can
  add a country code without being told one;
* MD5-looking values: the SDK passes 32 hex digits through as "already hashed"; Meta
  wants SHA-256, so we hash them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from facebook_business.adobjects.serverside.normalize import Normalize

from trackyard.destinations import hashing

OURS: dict[str, Callable[[object], str | None]] = {
    "em": hashing.hash_email,
    "ph": hashing.hash_phone,
    "fn": hashing.hash_name,
    "ln": hashing.hash_name,
    "ct": hashing.hash_city,
    "st": hashing.hash_state,
    "zp": hashing.hash_zip,
    "country": hashing.hash_country,
    "ge": hashing.hash_gender,
}

AGREED = [
    ("em", "John_Smith@gmail.com"),
    ("em", "  Peter@Example.COM "),
    ("em", "nicholas.aguilar@segment.com"),
    ("ph", "+1 (555) 010-9999"),
    ("ph", "+44 20 7946 0958"),
    ("ph", "0044 20 7946 0958"),
    ("ph", "1-650-555-1212"),
    ("ph", "020 7946 0958"),
    ("ph", "+33 6 12 34 56 78"),
    ("fn", "Mary"),
    ("fn", "정"),
    ("fn", "Valéry"),
    ("ln", "  GIBBONS "),
    ("ln", "van der Berg"),
    ("ct", "San Francisco"),
    ("ct", "St. Louis"),
    ("ct", "Winston-Salem"),
    ("ct", "São Paulo"),
    ("st", "CA"),
    ("st", " tx "),
    ("zp", "94107"),
    ("zp", "94107-1234"),
    ("zp", "SW1A 1AA"),
    ("country", "US"),
    ("country", " de "),
    ("ge", "m"),
    ("ge", "F"),
    ("em", hashing.sha256_hex("already@hashed.com")),
    ("ph", hashing.sha256_hex("15550109999").upper()),
]


def sdk_hash(field: str, value: str) -> str:
    return Normalize.normalize_field(field, value)


@pytest.mark.parametrize(("field", "value"), AGREED, ids=[f"{f}:{v[:20]}" for f, v in AGREED])
def test_our_hash_equals_the_sdks(field, value):
    assert OURS[field](value) == sdk_hash(field, value)


@pytest.mark.parametrize(
    ("field", "value", "ours", "sdks"),
    [
        ("fn", "O'Neil", "oneil", "o'neil"),
        ("ln", "Smith-Jones", "smithjones", "smith-jones"),
        ("st", "Texas", "tx", "texas"),
        ("st", "New York", "ny", "newyork"),
        ("zp", "01310-100", "01310100", "01310"),
    ],
)
def test_documented_differences_in_normalisation(field, value, ours, sdks):
    assert OURS[field](value) == hashing.sha256_hex(ours)
    assert sdk_hash(field, value) == hashing.sha256_hex(sdks)


def test_country_names_are_understood_where_the_sdk_refuses_them():
    assert hashing.hash_country("United States") == sdk_hash("country", "us")
    with pytest.raises(TypeError):
        sdk_hash("country", "United States")


def test_both_refuse_an_email_without_a_domain_and_a_phone_without_digits():
    assert hashing.hash_email("peter@example") is None
    with pytest.raises(TypeError):
        sdk_hash("em", "peter@example")
    assert hashing.hash_phone("call me") is None
    with pytest.raises(ValueError):
        sdk_hash("ph", "call me")


def test_short_numbers_are_refused_where_the_sdks_pattern_takes_them():
    assert hashing.hash_phone("1234567") is not None  # 7 digits: both accept
    assert sdk_hash("ph", "1234567") == hashing.hash_phone("1234567")
    assert hashing.hash_phone("+1 234 567 890 123 456") is None  # 16 digits: not E.164
    assert sdk_hash("ph", "+1 234 567 890 123 456") == hashing.sha256_hex("1234567890123456")


def test_md5_values_are_hashed_by_us_and_passed_through_by_the_sdk():
    md5 = "0cba00ca3da1b283a57287bcceb17e35"
    assert sdk_hash("external_id", md5) == md5
    assert hashing.hash_external_id(md5) == hashing.sha256_hex(md5)
