"""Table and column names as Segment's warehouses make them (contract §4.3).

`snake_case` is go-snakecase's algorithm: only ASCII letters and digits survive, every
other byte separates words; a word is a run of capitals or digits followed by a run of
lower-case letters or digits, so `CStringRef` gives `cstring_ref` and `Base64Encode`
gives `base64_encode`. On top of it:

- a name that starts with a digit gets a `_` prefix (`3doctors` → `_3doctors`);
- an SQL reserved word gets a `_` prefix (`select` → `_select`). The list is the union of
  PostgreSQL's, DuckDB's and Redshift's reserved words, the same on every dialect, so
  one event gets the same column names in every warehouse;
- a name longer than the dialect allows is cut and given a hash of the full name
  (`<prefix>_<8 hex>`), so two long keys that share a prefix stay two columns.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

_LOWER = frozenset(b"abcdefghijklmnopqrstuvwxyz")
_UPPER = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGIT = frozenset(b"0123456789")
_UPPER_OR_DIGIT = _UPPER | _DIGIT
_LOWER_OR_DIGIT = _LOWER | _DIGIT
_WORD = _UPPER | _LOWER | _DIGIT

_POSTGRES_RESERVED = """
all analyse analyze and any array as asc asymmetric authorization binary both case cast check collate
collation column concurrently constraint create cross current_catalog current_date current_role
current_schema current_time current_timestamp current_user default deferrable desc distinct do else end
except false fetch for foreign freeze from full grant group having ilike in initially inner intersect into
is isnull join lateral leading left like limit localtime localtimestamp natural not notnull null offset on
only or order outer overlaps placing primary references returning right select session_user similar some
symmetric table tablesample then to trailing true union unique user using variadic verbose when where
window with
"""
_DUCKDB_RESERVED = """
anti asof at by columns describe generated glob lambda map pivot pivot_longer pivot_wider positional
qualify semi show struct summarize try_cast tuple unpack unpivot
"""
_REDSHIFT_RESERVED = """
aes128 aes256 allowoverwrite backup between blanksasnull bytedict bzip2 credentials current_user_id
defrag delta delta32k disable emptyasnull enable encode encrypt encryption explicit globaldict256
globaldict64k gzip identity ignore interval lun luns lzo lzop minus mostly16 mostly32 mostly8 new off
offline oid old open parallel partition percent permissions raw readratio recover rejectlog resort respect
restore snapshot sysdate system tag tdes text255 text32k timestamp top truncatecolumns unnest wallet without
"""
RESERVED_WORDS = frozenset((_POSTGRES_RESERVED + _DUCKDB_RESERVED + _REDSHIFT_RESERVED).split())


@lru_cache(maxsize=65536)
def snake_case(name: str) -> str:
    """go-snakecase: `sampleText` → `sample_text`, `2FA Enabled` → `2fa_enabled`."""
    data = name.encode()
    words: list[bytes] = []
    i, end = 0, len(data)
    while i < end:
        while i < end and data[i] not in _WORD:
            i += 1
        start = i
        while i < end and data[i] in _UPPER_OR_DIGIT:
            i += 1
        while i < end and data[i] in _LOWER_OR_DIGIT:
            i += 1
        if i > start:
            words.append(data[start:i].lower())
    return b"_".join(words).decode()


def safe_identifier(name: str, max_length: int) -> str:
    """A snake_case name made safe to use unquoted: digit-first and reserved words get `_`,
    and names over `max_length` bytes are cut and suffixed with a hash of the full name."""
    if name[:1].isdigit() or name in RESERVED_WORDS:
        name = f"_{name}"
    if len(name) > max_length:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: max_length - 9].rstrip('_')}_{digest}"
    return name


def quote(identifier: str) -> str:
    """An identifier quoted for SQL (PostgreSQL and DuckDB alike)."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A string literal for SQL (PostgreSQL and DuckDB alike)."""
    return "'" + value.replace("'", "''") + "'"
