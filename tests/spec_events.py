"""The Spec scenario every destination test uses: normalised events as the log stores them.

Built from Segment's own examples (identify, the e-commerce v2 events, page, screen,
group, alias), already normalised as `trackyard serve` stores them.
"""

from __future__ import annotations

import copy
from typing import Any

CONTEXT: dict[str, Any] = {
    "ip": "203.0.113.7",
    "library": {"name": "analytics.js", "version": "next-1.84.3"},
    "locale": "en-US",
    "timezone": "Europe/Amsterdam",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "page": {
        "path": "/checkout",
        "referrer": "https://www.google.com/",
        "search": "?utm_source=newsletter",
        "title": "Checkout",
        "url": "https://shop.example/checkout?utm_source=newsletter",
    },
    "campaign": {"name": "spring_sale", "source": "newsletter", "medium": "email"},
    "traits": {"email": "peter@example.com"},
}

PRODUCTS = [
    {
        "product_id": "507f1f77",
        "sku": "G-32",
        "category": "Games",
        "name": "Monopoly: 3rd Edition",
        "brand": "Hasbro",
        "variant": "200 pieces",
        "price": 18.99,
        "quantity": 1,
        "coupon": "MAYDEALS",
        "position": 3,
        "url": "https://shop.example/product/path",
        "image_url": "https://shop.example/product/path.jpg",
    },
    {
        "product_id": "505bd76",
        "sku": "F-11",
        "category": "Games",
        "name": "Uno Card Game",
        "brand": "Mattel",
        "price": 3.0,
        "quantity": 2,
    },
]


def _base(type_: str, message_id: str, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": type_,
        "messageId": message_id,
        "anonymousId": "507f191e810c19729de860ea",
        "userId": "97980cfea0067",
        "context": copy.deepcopy(CONTEXT),
        "integrations": {},
        "originalTimestamp": "2026-11-28T10:00:00.000Z",
        "sentAt": "2026-11-28T10:00:00.120Z",
        "receivedAt": "2026-11-28T10:00:05.300Z",
        "timestamp": "2026-11-28T10:00:05.180Z",
        "channel": "browser",
    }
    event.update(fields)
    return event


def identify() -> dict[str, Any]:
    return _base(
        "identify",
        "ajs-next-1764324000000-id-0001",
        traits={
            "email": "peter@example.com",
            "firstName": "Peter",
            "lastName": "Gibbons",
            "name": "Peter Gibbons",
            "phone": "+1 (555) 010-9999",
            "plan": "premium",
            "logins": 5,
            "createdAt": "2026-01-15T09:30:00.000Z",
            "address": {
                "city": "San Francisco",
                "country": "US",
                "postalCode": "94107",
                "state": "CA",
                "street": "6th St",
            },
        },
    )


def track(event_name: str, properties: dict[str, Any], message_id: str) -> dict[str, Any]:
    return _base("track", message_id, event=event_name, properties=properties)


def order_completed() -> dict[str, Any]:
    return track(
        "Order Completed",
        {
            "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
            "order_id": "50314b8e9bcf000000000000",
            "affiliation": "Google Store",
            "total": 27.50,
            "subtotal": 22.50,
            "revenue": 25.00,
            "shipping": 3,
            "tax": 2,
            "discount": 2.5,
            "coupon": "hasbros",
            "currency": "USD",
            "products": copy.deepcopy(PRODUCTS),
        },
        "ajs-next-1764324000000-oc-0002",
    )


def product_viewed() -> dict[str, Any]:
    properties = {**copy.deepcopy(PRODUCTS[0]), "currency": "USD", "value": 18.99}
    return track("Product Viewed", properties, "ajs-next-1764324000000-pv-0003")


def product_added() -> dict[str, Any]:
    properties = {"cart_id": "skdjsidjsdkdj29j", **copy.deepcopy(PRODUCTS[0])}
    return track("Product Added", properties, "ajs-next-1764324000000-pa-0004")


def checkout_started() -> dict[str, Any]:
    return track(
        "Checkout Started",
        {
            "order_id": "50314b8e9bcf000000000000",
            "value": 30,
            "revenue": 25.00,
            "shipping": 3,
            "tax": 2,
            "discount": 2.5,
            "coupon": "hasbros",
            "currency": "USD",
            "products": copy.deepcopy(PRODUCTS),
        },
        "ajs-next-1764324000000-cs-0005",
    )


def products_searched() -> dict[str, Any]:
    return track("Products Searched", {"query": "blue roses"}, "ajs-next-1764324000000-ps-0006")


def signed_up() -> dict[str, Any]:
    return track("Signed Up", {"plan": "pro", "trial": True, "seats": 3}, "ajs-next-1764324000000-su-0007")


def page() -> dict[str, Any]:
    return _base(
        "page",
        "ajs-next-1764324000000-pg-0008",
        name="Pricing",
        properties={
            "name": "Pricing",
            "title": "Pricing · Shop",
            "url": "https://shop.example/pricing",
            "path": "/pricing",
            "referrer": "https://www.google.com/",
            "search": "",
            "category": "Docs",
        },
    )


def screen() -> dict[str, Any]:
    event = _base("screen", "ios-0009", name="Home", properties={"variation": "blue"})
    event["context"] = {
        "ip": "203.0.113.9",
        "library": {"name": "analytics-swift", "version": "1.5.0"},
        "app": {"name": "Shop", "version": "3.2.1", "build": "321"},
        "device": {"id": "B5372DB0", "manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"},
        "os": {"name": "iOS", "version": "17.1"},
    }
    event["channel"] = "mobile"
    return event


def group() -> dict[str, Any]:
    return _base(
        "group",
        "ajs-next-1764324000000-gr-0010",
        groupId="0e8c78ea9d97a7b8185e8632",
        traits={
            "name": "Initech",
            "industry": "Technology",
            "employees": 329,
            "plan": "enterprise",
            "website": "https://initech.example",
        },
    )


def alias() -> dict[str, Any]:
    event = _base("alias", "ajs-next-1764324000000-al-0011", previousId="507f191e810c19729de860ea")
    event.pop("anonymousId")
    return event


def scenario() -> list[dict[str, Any]]:
    """The full Spec scenario in log order."""
    return [
        identify(),
        product_viewed(),
        product_added(),
        checkout_started(),
        order_completed(),
        products_searched(),
        signed_up(),
        page(),
        screen(),
        group(),
        alias(),
    ]
