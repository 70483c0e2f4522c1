"""The shared normalise-and-hash helpers, against the vendors' published examples.

Vectors: Meta's "customer information parameters" page (em, ph, fn examples with their
expected SHA-256), the reference's §9.2 vectors (one from Segment's own test suite) and
its appendix A.7/A.8 worked translations (hash inputs stated there).
"""

from __future__ import annotations

import pytest

from trackyard.destinations import hashing

# -- the vendors' published examples -----------------------------------------------------------


@pytest.mark.parametrize(
    ("hash_of", "value", "expected"),
    [
        # Meta's documented examples: input, then the SHA-256 Meta expects.
        (
            hashing.hash_email,
            "John_Smith@gmail.com",
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
        ),
        (
            lambda value: hashing.hash_phone(value, default_country_code="1"),  # "US phone number"
            "(650)555-1212",
            "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
        ),
        (hashing.hash_name, "Mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
        (hashing.hash_name, "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"),
        (hashing.hash_name, "Valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"),
        # §9.2 (the first is Segment's purchase.test.ts vector).
        (
            hashing.hash_email,
            "nicholas.aguilar@segment.com",
            "eeaf810ee0e3cef3307089f22c3804f54c79eed19ef29bf70df864b43862c380",
        ),
        (
            hashing.hash_phone,
            "15551234567",
            "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a",
        ),
        (hashing.hash_country, "US", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
        (hashing.hash_gender, "male", "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"),
        (
            hashing.hash_date_of_birth,
            "1990-01-15",
            "4747c382bedef489a190a6797e6f4451907b86511bdd49cfa8f9d4c1a78d8bac",
        ),
        # Appendix A.7 (Meta) hash inputs, from the raw values of input T.
        (
            hashing.hash_email,
            "jane.doe@example.com",
            "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d",
        ),
        (
            hashing.hash_phone,
            "+1 (555) 123-4567",
            "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a",
        ),
        (hashing.hash_name, "Jane", "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2"),
        (hashing.hash_name, "Doe", "799ef92a11af918e3fb741df42934f3b568ed2d93ac1df74f1b8d41a27932a6f"),
        (hashing.hash_city, "New York", "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5"),
        (hashing.hash_state, "New York", "1b06e2003f8420d6fa42badd8f77ec0f706b976b7a48b13c567dc5a559681683"),
        (hashing.hash_zip, "10001", "e443169117a184f91186b401133b20be670c7c0896f9886075e5d9b81e9d076b"),
        (
            hashing.hash_external_id,
            "u123",
            "06c0a1fbb20ef07684b202620d0ab29ee0c6cb427998991ce57b5ceee2584b78",
        ),
        # Appendix A.8: TikTok hashes the E.164 string, `+` included.
        (
            hashing.hash_phone_e164,
            "+1 (555) 123-4567",
            "8a59780bb8cd2ba022bfa5ba2ea3b6e07af17a7d8b30c1f9b3390e36f69019e4",
        ),
    ],
)
def test_published_examples_hash_as_the_vendors_expect(hash_of, value, expected):
    assert hash_of(value) == expected


# -- normalisation rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  Peter@Example.COM ", "peter@example.com"),
        ("peter@example", None),
        ("peter example.com", None),
        ("pe ter@example.com", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_email_is_trimmed_lower_cased_and_must_look_like_one(value, expected):
    assert hashing.normalize_email(value) == expected


def test_google_drops_the_dots_of_gmail_addresses_only():
    assert hashing.normalize_email(" Jane.Doe@GMail.com", drop_gmail_dots=True) == "janedoe@gmail.com"
    assert (
        hashing.normalize_email("jane.doe@googlemail.com", drop_gmail_dots=True) == "janedoe@googlemail.com"
    )
    assert hashing.normalize_email("jane.doe@example.com", drop_gmail_dots=True) == "jane.doe@example.com"
    assert hashing.hash_google_email("Jane.Doe@gmail.com") == hashing.sha256_hex("janedoe@gmail.com")


@pytest.mark.parametrize(
    ("value", "country_code", "expected"),
    [
        ("+1 (555) 010-9999", None, "15550109999"),
        ("+44 20 7946 0958", None, "442079460958"),
        ("0044 20 7946 0958", None, "442079460958"),  # international prefix 00
        ("1-650-555-1212", None, "16505551212"),
        ("020 7946 0958", None, "2079460958"),  # national, no default: leading zero dropped (Meta's rule)
        ("020 7946 0958", "44", "442079460958"),  # national with a trunk 0: the default code replaces it
        ("(650) 555-1212", "1", "16505551212"),  # national without a trunk prefix
        ("1 650 555 1212", "1", "16505551212"),  # already starts with the code
        ("+33 6 12 34 56 78", "1", "33612345678"),  # international numbers ignore the default
        ("(650) 555-1212", "+1", "16505551212"),
        (15551234567, None, "15551234567"),
        ("555-CALL-NOW", None, None),
        ("12345", None, None),  # fewer than 7 digits
        ("+1234567890123456", None, None),  # more than 15
        ("", None, None),
    ],
)
def test_phone_is_digits_with_the_country_code(value, country_code, expected):
    assert hashing.normalize_phone(value, country_code) == expected


def test_e164_puts_the_plus_back():
    assert hashing.normalize_phone_e164("(650) 555-1212", "1") == "+16505551212"
    assert hashing.normalize_phone_e164("not a phone") is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  PETER ", "peter"),
        ("Mary-Ann  O'Neil", "maryann oneil"),
        ("Zoë", "zoë"),
        ("Zoe\u0308", "zoë"),  # decomposed input is composed (NFC) first
        ("J.R.R.", "jrr"),
        ("!!!", None),
    ],
)
def test_names_lose_case_and_punctuation_but_keep_letters(value, expected):
    assert hashing.normalize_name(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("M", "m"), ("male", "m"), ("Man", "m"), ("F", "f"), ("female", "f"), ("woman", "f"), ("other", None)],
)
def test_gender_is_m_or_f(value, expected):
    assert hashing.normalize_gender(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1990-01-15", "19900115"),
        ("19900115", "19900115"),
        ("1990/01/15", "19900115"),
        ("1990-01-15T23:30:00-08:00", "19900115"),  # the date as written: a birthday has no zone
        ("1990-02-30", None),
        ("1899-12-31", None),
        ("01/15/1990", None),  # month/day order is ambiguous: dropped, not guessed
        ("yesterday", None),
    ],
)
def test_date_of_birth_is_yyyymmdd(value, expected):
    assert hashing.normalize_date_of_birth(value) == expected


def test_city_keeps_lower_case_letters_only():
    assert hashing.normalize_city("San Francisco") == "sanfrancisco"
    assert hashing.normalize_city("St. Louis 2") == "stlouis"
    assert hashing.normalize_city("São Paulo") == "sãopaulo"
    assert hashing.normalize_city("12") is None


def test_state_maps_us_names_to_their_code():
    assert hashing.normalize_state("California") == "ca"
    assert hashing.normalize_state(" TX ") == "tx"
    assert hashing.normalize_state("District of Columbia") == "dc"
    assert hashing.normalize_state("Île-de-France") == "îledefrance"


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("94107", None, "94107"),
        ("94107-1234", None, "94107"),
        ("941071234", "US", "94107"),
        ("SW1A 1AA", "GB", "sw1a1aa"),
        ("01310-100", "BR", "01310100"),
        ("100-0001", "JP", "1000001"),
        ("941071234", "DE", "941071234"),
    ],
)
def test_zip_is_compact_and_us_zips_keep_five_digits(value, country, expected):
    assert hashing.normalize_zip(value, country) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("US", "us"), (" de ", "de"), ("USA", "us"), ("United Kingdom", "gb"), ("XX", None), ("Germany", None)],
)
def test_country_is_an_assigned_alpha_2_code(value, expected):
    assert hashing.normalize_country(value) == expected


def test_external_id_is_trimmed_and_lower_cased():
    assert hashing.normalize_external_id("  User-42 ") == "user-42"
    assert hashing.normalize_external_id(97980) == "97980"


def test_tiktok_text_rules():
    assert hashing.normalize_compact(" Jane Marie ") == "janemarie"
    assert hashing.normalize_alphanumeric("New York 10") == "newyork10"


# -- hashing ----------------------------------------------------------------------------------


def test_a_value_already_hashed_is_never_hashed_twice():
    digest = hashing.sha256_hex("peter@example.com")
    assert hashing.hash_email(digest) == digest
    assert hashing.hash_email(f" {digest.upper()} ") == digest
    assert hashing.hash_phone(digest) == digest
    assert hashing.hash_external_id(digest.upper()) == digest


def test_what_cannot_be_normalised_is_not_hashed():
    assert hashing.hash_email("not an email") is None
    assert hashing.hash_phone("call me") is None
    assert hashing.hash_gender("x") is None
    assert hashing.hash_country("Atlantis") is None
    assert hashing.hash_date_of_birth("soon") is None
    assert hashing.hash_name(None) is None


def test_hashes_are_lower_case_hex_of_the_utf8_bytes():
    assert (
        hashing.hash_compact(" Jane ") == "81f8f6dde88365f3928796ec7aa53f72820b06db8664f5fe76a7eb13e24546a2"
    )
    assert hashing.is_sha256(hashing.sha256_hex("x"))
    assert not hashing.is_sha256("d41d8cd98f00b204e9800998ecf8427e")  # MD5 is not SHA-256
