"""Normalising and SHA-256 hashing of personal data, shared by the advertising destinations.

Ad platforms match people on hashes, so a hash is only useful when both sides normalised
the value the same way first. The rules below are Meta's (Conversions API, "customer
information parameters"), which TikTok and Google Ads share for the most part; where a
vendor differs, the difference has its own function (E.164 phones with `+` for TikTok and
Google, dots removed from Gmail addresses for Google).

Every `normalize_*` returns the normalised string, or None when the value cannot be
normalised into something the vendor accepts (an email without `@`, a date that is not
one): a wrong value is dropped, never hashed. Every `hash_*` returns the lower-case hex
SHA-256 of the normalised UTF-8 string, or None; a value that already is a SHA-256 (64
hex digits) is passed through, lower-cased, and never hashed twice.

Decisions (destinations-marketing.md §9.2):
* Email: trim, lower-case; must look like `local@domain.tld` and contain no whitespace.
* Phone: digits only, with the country code, no `+` (Meta; `phone_e164` adds it back).
  `+` or `00` mark an international number. Other numbers are taken to include their
  country code already, leading zeros dropped (Meta's rule, and the official SDK's) —
  unless a default country calling code is given: then a number written nationally (a
  trunk `0`, or not starting with that code) gets the code, as Meta's own example
  "(650)555-1212" → "16505551212" for a US number. Between 7 and 15 digits (E.164).
* First and last name: lower-case, Unicode NFC, punctuation and symbols removed, runs of
  whitespace collapsed to one space; letters outside a-z stay (UTF-8, "Valéry" → "valéry").
* Gender: `m` or `f` (male/man/m, female/woman/f, any case); anything else is dropped.
* Date of birth: `YYYYMMDD`, from `YYYYMMDD`, `YYYY-MM-DD`, `YYYY/MM/DD` or an ISO-8601
  date-time (its date as written: a birthday has no time zone); year from 1900.
* City: lower-case letters only (no spaces, punctuation or digits): "San Francisco" →
  "sanfrancisco".
* State: a US state or territory name becomes its 2-letter code ("New York" → "ny");
  anything else is lower-cased to letters only (Meta's rule for states outside the US).
* Zip: lower-case, no whitespace; a US ZIP+4 (or any 9-digit US zip) keeps its first 5
  digits; other dashes are removed ("01310-100" → "01310100"). The official SDK cuts at
  the first dash, which breaks Brazilian and Japanese postcodes.
* Country: ISO 3166-1 alpha-2, lower-case, checked against the list of assigned codes;
  the usual English names of the US and the UK are understood, other names are dropped
  rather than guessed.
* External id: trimmed and lower-cased before hashing, as Segment does and as Meta's
  pixel normalises it, so server and browser ids match.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from datetime import date

from trackyard.destinations.base import SettingsError

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_SEPARATORS = re.compile(r"[\s\-().\[\]/]")
_WHITESPACE = re.compile(r"\s+")
_DATE = re.compile(r"^(\d{4})[-/.]?(\d{2})[-/.]?(\d{2})(?:$|[Tt ])")
_US_ZIP = re.compile(r"^(\d{5})-?(\d{4})?$")
_MIN_PHONE_DIGITS, _MAX_PHONE_DIGITS = 7, 15

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

_ALPHA_2_CODES = """
    ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bl bm bn bo bq br bs
    bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee
    eg eh er es et fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm
    hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr kw ky kz la lb lc
    li lk lr ls lt lu lv ly ma mc md me mf mg mh mk ml mm mn mo mp mq mr ms mt mu mv mw mx my mz na
    nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw
    sa sb sc sd se sg sh si sj sk sl sm sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to
    tr tt tv tw tz ua ug um us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw
    """
COUNTRIES = frozenset(_ALPHA_2_CODES.split())
_COUNTRY_NAMES = {
    **dict.fromkeys(("usa", "unitedstates", "unitedstatesofamerica"), "us"),
    **dict.fromkeys(("uk", "unitedkingdom", "greatbritain"), "gb"),
}
US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi", "minnesota": "mn",
    "mississippi": "ms", "missouri": "mo", "montana": "mt", "nebraska": "ne", "nevada": "nv",
    "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm", "newyork": "ny",
    "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok", "oregon": "or",
    "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va",
    "washington": "wa", "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy",
    "americansamoa": "as", "guam": "gu", "northernmarianaislands": "mp", "puertorico": "pr",
    "virginislands": "vi", "usvirginislands": "vi",
}  # fmt: skip
_GENDERS = {
    **dict.fromkeys(("m", "male", "man"), "m"),
    **dict.fromkeys(("f", "female", "woman"), "f"),
}


def sha256_hex(text: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 bytes of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256(value: object) -> bool:
    """True for a string of 64 hex digits: a value someone already hashed."""
    return isinstance(value, str) and _SHA256.match(value.strip()) is not None


def _text(value: object) -> str | None:
    """The value as a stripped string: numbers become text, anything else (or blank) None."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text or None


def _letters(text: str) -> str:
    return "".join(char for char in unicodedata.normalize("NFC", text.lower()) if char.isalpha())


# -- normalisers ---------------------------------------------------------------------------


def normalize_email(value: object, *, drop_gmail_dots: bool = False) -> str | None:
    """Trimmed, lower-cased email; with `drop_gmail_dots`, Google's rule for Gmail addresses."""
    text = _text(value)
    if text is None or not _EMAIL.match(text):
        return None
    email = text.lower()
    local, domain = email.rsplit("@", 1)
    if drop_gmail_dots and domain in GMAIL_DOMAINS:
        email = f"{local.replace('.', '')}@{domain}"
    return email


def check_phone_country_code(code: str | None, destination: str) -> None:
    """A `phone_country_code` setting must be 1 to 3 digits (a leading `+` allowed)."""
    if code is not None and not (code.lstrip("+").isdigit() and len(code.lstrip("+")) <= 3):
        raise SettingsError(
            f"{destination}: setting 'phone_country_code' must be 1 to 3 digits; got {code!r}"
        )


def normalize_phone(value: object, default_country_code: str | None = None) -> str | None:
    """Digits only, country code first, no `+`: "+1 (555) 010-9999" → "15550109999"."""
    text = _text(value)
    if text is None:
        return None
    compact = _PHONE_SEPARATORS.sub("", text)
    international = compact.startswith(("+", "00"))
    digits = compact.lstrip("+")
    if not digits.isdigit():
        return None
    national = digits.lstrip("0")
    country_code = (default_country_code or "").strip().lstrip("+")
    if country_code and not international:
        trunk = national != digits
        if trunk or not national.startswith(country_code):
            national = country_code + national
    if not _MIN_PHONE_DIGITS <= len(national) <= _MAX_PHONE_DIGITS:
        return None
    return national


def normalize_phone_e164(value: object, default_country_code: str | None = None) -> str | None:
    """E.164, `+` then the digits of `normalize_phone` (TikTok, Google): "+15550109999"."""
    digits = normalize_phone(value, default_country_code)
    return None if digits is None else f"+{digits}"


def normalize_name(value: object) -> str | None:
    """Lower-case, no punctuation or symbols, single spaces: "Mary-Ann  O'Neil" → "maryann oneil"."""
    text = _text(value)
    if text is None:
        return None
    kept = "".join(
        char
        for char in unicodedata.normalize("NFC", text.lower())
        if not unicodedata.category(char).startswith(("P", "S"))
    )
    name = _WHITESPACE.sub(" ", kept).strip()
    return name or None


def normalize_gender(value: object) -> str | None:
    """`m` or `f`."""
    text = _text(value)
    return None if text is None else _GENDERS.get(text.lower())


def normalize_date_of_birth(value: object) -> str | None:
    """`YYYYMMDD` from a date or an ISO-8601 date-time (its date as written)."""
    text = _text(value)
    match = _DATE.match(text) if text else None
    if match is None:
        return None
    year, month, day = (int(part) for part in match.groups())
    try:
        born = date(year, month, day)
    except ValueError:
        return None
    return born.strftime("%Y%m%d") if born.year >= 1900 else None


def normalize_city(value: object) -> str | None:
    """Lower-case letters only: "San Francisco" → "sanfrancisco"."""
    text = _text(value)
    return (_letters(text) or None) if text else None


def normalize_state(value: object) -> str | None:
    """A US state's 2-letter code ("New York" → "ny"), else lower-case letters only."""
    text = _text(value)
    if text is None:
        return None
    letters = _letters(text)
    return US_STATES.get(letters, letters) or None


def normalize_zip(value: object, country: str | None = None) -> str | None:
    """Lower-case, no spaces or dashes; US zips cut to 5 digits: "94107-1234" → "94107"."""
    text = _text(value)
    if text is None:
        return None
    compact = _WHITESPACE.sub("", text).lower()
    us_zip = _US_ZIP.match(compact)
    if us_zip and (us_zip.group(2) or len(compact) == 5) and normalize_country(country) in (None, "us"):
        return us_zip.group(1)
    return compact.replace("-", "") or None


def normalize_country(value: object) -> str | None:
    """ISO 3166-1 alpha-2 in lower case: "US" → "us"; unknown codes and names → None."""
    text = _text(value)
    if text is None:
        return None
    letters = _letters(text)
    code = _COUNTRY_NAMES.get(letters, letters)
    return code if code in COUNTRIES else None


def normalize_external_id(value: object) -> str | None:
    """Trimmed and lower-cased."""
    text = _text(value)
    return None if text is None else text.lower()


def normalize_compact(value: object) -> str | None:
    """Lower-case with every whitespace removed (TikTok's rule for names and zip codes)."""
    text = _text(value)
    return (_WHITESPACE.sub("", text.lower()) or None) if text else None


def normalize_alphanumeric(value: object) -> str | None:
    """Lower-case letters and digits only (TikTok's unhashed city, state and country)."""
    text = _text(value)
    if text is None:
        return None
    kept = "".join(char for char in unicodedata.normalize("NFC", text.lower()) if char.isalnum())
    return kept or None


# -- hashers ---------------------------------------------------------------------------------


def hashed(value: object, normalize: Callable[[object], str | None]) -> str | None:
    """SHA-256 of `normalize(value)`; an existing SHA-256 passes through, lower-cased."""
    if is_sha256(value):
        return str(value).strip().lower()
    normalized = normalize(value)
    return None if normalized is None else sha256_hex(normalized)


def hash_email(value: object) -> str | None:
    return hashed(value, normalize_email)


def hash_google_email(value: object) -> str | None:
    return hashed(value, lambda raw: normalize_email(raw, drop_gmail_dots=True))


def hash_phone(value: object, default_country_code: str | None = None) -> str | None:
    return hashed(value, lambda raw: normalize_phone(raw, default_country_code))


def hash_phone_e164(value: object, default_country_code: str | None = None) -> str | None:
    return hashed(value, lambda raw: normalize_phone_e164(raw, default_country_code))


def hash_name(value: object) -> str | None:
    return hashed(value, normalize_name)


def hash_gender(value: object) -> str | None:
    return hashed(value, normalize_gender)


def hash_date_of_birth(value: object) -> str | None:
    return hashed(value, normalize_date_of_birth)


def hash_city(value: object) -> str | None:
    return hashed(value, normalize_city)


def hash_state(value: object) -> str | None:
    return hashed(value, normalize_state)


def hash_zip(value: object, country: str | None = None) -> str | None:
    return hashed(value, lambda raw: normalize_zip(raw, country))


def hash_country(value: object) -> str | None:
    return hashed(value, normalize_country)


def hash_external_id(value: object) -> str | None:
    return hashed(value, normalize_external_id)


def hash_compact(value: object) -> str | None:
    return hashed(value, normalize_compact)
