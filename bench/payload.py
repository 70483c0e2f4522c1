"""Deterministic, realistic Segment `track` calls for the ingest benchmark.

Each event carries the full context a browser or server SDK sends (page, library,
userAgent, ip, locale, sometimes campaign), properties and integrations:
about 700–880 bytes, median ≈ 770, the payload shape of limits.md.

An event is held as a *template*: its JSON split around the messageId, so that a load
generator (Python or wrk's Lua) can give every event a unique id cheaply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

ID_MARK = "@@MESSAGE_ID@@"
ID_WIDTH = 36  # the length of a UUID, the id shape SDKs send
SENT_AT = "2026-11-28T10:00:00.500Z"

_EVENTS = (
    ("Product Viewed", "/products/{sku}", "Product: {name}"),
    ("Product Added", "/products/{sku}", "Product: {name}"),
    ("Checkout Started", "/checkout", "Checkout"),
    ("Order Completed", "/checkout/thank-you", "Thank you"),
    ("Signed Up", "/signup", "Create your account"),
    ("Article Read", "/blog/{sku}", "Blog: {name}"),
)
_NAMES = ("Trail Runner 2", "Merino Hoodie", "Canvas Tote", "Steel Bottle", "Rain Shell", "Wool Beanie")
_CATEGORIES = ("footwear", "apparel", "bags", "outdoor", "accessories")
_USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
_LOCALES = ("en-US", "de-DE", "fr-FR", "en-GB")
_REFERRERS = ("https://www.google.com/", "https://news.ycombinator.com/", "", "https://t.co/x1y2z3")


@dataclass(frozen=True, slots=True)
class Template:
    """One event's JSON as `prefix + messageId + suffix`."""

    prefix: bytes
    suffix: bytes

    def render(self, message_id: bytes) -> bytes:
        return self.prefix + message_id + self.suffix

    @property
    def size(self) -> int:
        return len(self.prefix) + ID_WIDTH + len(self.suffix)


def make_event(rng: random.Random, index: int) -> dict[str, object]:
    """One Segment track call; messageId is the placeholder ID_MARK."""
    name, path, title = rng.choice(_EVENTS)
    product = rng.choice(_NAMES)
    sku = f"SKU-{rng.randrange(10_000, 99_999)}"
    path, title = path.format(sku=sku.lower()), title.format(name=product)
    locale = rng.choice(_LOCALES)
    context: dict[str, object] = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {
            "path": path,
            "referrer": rng.choice(_REFERRERS),
            "search": "",
            "title": title,
            "url": f"https://shop.example.com{path}",
        },
        "userAgent": rng.choice(_USER_AGENTS),
        "ip": f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "locale": locale,
    }
    if index % 3 == 0:
        context["campaign"] = {"name": "autumn-sale", "source": "newsletter", "medium": "email"}
    return {
        "type": "track",
        "event": name,
        "userId": f"user-{rng.randrange(1_000_000):07d}",
        "anonymousId": f"{rng.getrandbits(128):032x}",
        "messageId": ID_MARK,
        "timestamp": "2026-11-28T10:00:00.123Z",
        "properties": {
            "product_id": sku,
            "name": product,
            "category": rng.choice(_CATEGORIES),
            "price": round(rng.uniform(5, 250), 2),
            "quantity": rng.randrange(1, 4),
            "currency": "USD",
        },
        "context": context,
        "integrations": {"All": True},
    }


def templates(count: int = 100, seed: int = 7) -> list[Template]:
    rng = random.Random(seed)
    result = []
    for index in range(count):
        text = orjson.dumps(make_event(rng, index))
        prefix, _, suffix = text.partition(ID_MARK.encode())
        result.append(Template(prefix, suffix))
    return result


def batch_envelope() -> tuple[bytes, bytes]:
    """What goes before and after the comma-separated events of a /v1/batch body."""
    return b'{"batch":[', b'],"sentAt":"' + SENT_AT.encode() + b'"}'


def message_id(tag: str, number: int) -> bytes:
    """A unique id of ID_WIDTH characters: the run's tag, then a counter."""
    return f"{tag}-{number:0{ID_WIDTH - len(tag) - 1}d}".encode()


def batch_body(parts: list[Template], tag: str, first: int, size: int) -> bytes:
    head, tail = batch_envelope()
    events = [parts[(first + i) % len(parts)].render(message_id(tag, first + i)) for i in range(size)]
    return head + b",".join(events) + tail


def single_body(parts: list[Template], tag: str, number: int) -> bytes:
    return parts[number % len(parts)].render(message_id(tag, number))
