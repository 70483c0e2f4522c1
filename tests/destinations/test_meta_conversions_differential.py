"""Differential test: our Conversions API requests against those of Meta's official SDK
(PyPI `facebook-business`: `EventRequest(...).execute()` with `ServerEvent`, `UserData`,
`CustomData`, `Content`).

The SDK speaks HTTPS to graph.facebook.com through a `requests` session; a transport
adapter mounted on it sends each request to a local FakeVendor unchanged, so what is
compared is what the SDK puts on the wire. The SDK is given the raw Segment values
(traits as the user typed them, the event's properties by our mapping) and normalises
and hashes user data itself, which checks our hashing end to end.

Documented differences, normalised before comparing:
* transport: the SDK form-encodes `data` as a list of JSON strings with `access_token` in
  the query; we send one JSON body with `Authorization: Bearer` (Segment's way). Both
  are decoded to the list of events and the token is compared;
* hashed user_data keys: the SDK sends one-element lists, we send strings (Meta accepts
  both, and appendix A.7 uses strings): ours are wrapped in lists;
* external_id: the SDK sends it as given; we send sha256(lower-cased id), as Segment and
  the pixel do: the SDK's value is hashed that way before comparing;
* state: we map US state names to their code ("New York" → "ny", as Segment does); the
  SDK would hash the name, so it is given the code;
* currency: the SDK lower-cases it, we upper-case it (ISO 4217 writes it upper-case;
  Meta accepts both): compared upper-cased.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import requests
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.content import Content
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.gender import Gender
from facebook_business.adobjects.serverside.user_data import UserData
from facebook_business.api import FacebookAdsApi
from requests.adapters import HTTPAdapter

from tests import spec_events
from tests.destinations.test_meta_conversions import INPUT_T, PIXEL_ID, TOKEN, recent
from tests.fakes import FakeVendor, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations import hashing
from trackyard.destinations.base import parse_settings
from trackyard.destinations.meta_conversions import MetaConversionsSettings, destination
from trackyard.spec.timestamps import parse_ms

SETTINGS = parse_settings(
    MetaConversionsSettings, {"pixel_id": PIXEL_ID, "access_token": TOKEN, "test_event_code": "TEST4039"}
)
# The SDK lower-cases state names; we map US names to their code, so it is given the code.
STATE_CODES = {"New York": "NY"}
HASHED_KEYS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country")


class ToFakeVendor(HTTPAdapter):
    """Sends each request to the fake vendor instead of graph.facebook.com, otherwise unchanged."""

    def __init__(self, vendor_url: str) -> None:
        super().__init__()
        self.vendor_url = vendor_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url)
        request.url = f"{self.vendor_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        return super().send(request, **kwargs)


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(lambda _: ok_json({"events_received": 1, "messages": [], "fbtrace_id": "AbC"})) as fake:
        api = FacebookAdsApi.init(access_token=TOKEN, api_version="v24.0")
        api._session.requests.mount("https://", ToFakeVendor(fake.url))
        yield fake


def user_data(event: dict[str, Any]) -> UserData:
    """The SDK's UserData from the raw Segment values our mapping reads."""
    context = event["context"]
    traits = context.get("traits", {})
    address = traits.get("address", {})

    def listed(value: Any) -> list[str] | None:
        return [str(value)] if value else None

    return UserData(
        emails=listed(traits.get("email")),
        phones=listed(traits.get("phone")),
        first_names=listed(traits.get("firstName")),
        last_names=listed(traits.get("lastName")),
        genders=[Gender.MALE] if traits.get("gender") == "male" else None,
        dates_of_birth=listed(traits.get("birthday")),
        cities=listed(address.get("city")),
        states=listed(STATE_CODES.get(address.get("state"), address.get("state"))),
        zip_codes=listed(address.get("postalCode")),
        country_codes=listed(address.get("country")),
        external_ids=[event.get("userId") or event["anonymousId"]],
        client_ip_address=context["ip"],
        client_user_agent=context["userAgent"],
    )


def sdk_event(event: dict[str, Any], name: str, url: str, custom_data: CustomData | None) -> Event:
    return Event(
        event_name=name,
        event_time=parse_ms(event["timestamp"]) // 1000,
        event_id=event["messageId"],
        event_source_url=url,
        action_source=ActionSource.WEBSITE,
        user_data=user_data(event),
        custom_data=custom_data,
    )


MONOPOLY = Content(product_id="507f1f77", quantity=1, item_price=18.99)
CART = [MONOPOLY, Content(product_id="505bd76", quantity=2, item_price=3.0)]
CHECKOUT = "https://shop.example/checkout?utm_source=newsletter"


def with_full_traits(event: dict[str, Any]) -> dict[str, Any]:
    """The Spec identify's traits (the ones the SDK normalises as we do) in context.traits."""
    traits = copy.deepcopy(spec_events.identify()["traits"])
    traits["phone"] = "+1 (555) 010-9999"
    traits["gender"] = "male"
    traits["birthday"] = "19900115"
    event["context"]["traits"] = traits
    return event


def cases() -> list[tuple[dict[str, Any], Event]]:
    """Each Segment event, with the SDK event our mapping says it is."""
    viewed, added, checkout, order, searched, signed_up, page = (
        recent(make())
        for make in (
            spec_events.product_viewed,
            spec_events.product_added,
            spec_events.checkout_started,
            spec_events.order_completed,
            spec_events.products_searched,
            spec_events.signed_up,
            spec_events.page,
        )
    )
    order = with_full_traits(order)
    golden = recent(copy.deepcopy(INPUT_T))
    golden_products = [
        Content(product_id="p1", quantity=2, item_price=10),
        Content(product_id="p2", quantity=1, item_price=5),
    ]
    return [
        (
            viewed,
            sdk_event(
                viewed,
                "ViewContent",
                CHECKOUT,
                CustomData(currency="USD", value=18.99, content_ids=["507f1f77"], contents=[MONOPOLY]),
            ),
        ),
        (
            added,
            sdk_event(
                added,
                "AddToCart",
                CHECKOUT,
                CustomData(value=18.99, content_ids=["507f1f77"], contents=[MONOPOLY]),
            ),
        ),
        (
            checkout,
            sdk_event(
                checkout, "InitiateCheckout", CHECKOUT, CustomData(currency="USD", value=25.0, contents=CART)
            ),
        ),
        (
            order,
            sdk_event(order, "Purchase", CHECKOUT, CustomData(currency="USD", value=25.0, contents=CART)),
        ),
        (searched, sdk_event(searched, "Search", CHECKOUT, CustomData(search_string="blue roses"))),
        (
            signed_up,
            sdk_event(
                signed_up,
                "Signed Up",
                CHECKOUT,
                CustomData(custom_properties={"plan": "pro", "trial": True, "seats": 3}),
            ),
        ),
        (page, sdk_event(page, "PageView", "https://shop.example/pricing", None)),
        (
            golden,
            sdk_event(
                golden,
                "Purchase",
                "https://shop.example/checkout",
                CustomData(currency="USD", value=25, contents=golden_products),
            ),
        ),
    ]


def normalised_ours(body: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(body)
    for key in HASHED_KEYS:
        if key in event["user_data"]:
            event["user_data"][key] = [event["user_data"][key]]
    return event


def normalised_sdks(body: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(body)
    event["user_data"]["external_id"] = [
        hashing.hash_external_id(value) for value in event["user_data"]["external_id"]
    ]
    if "currency" in event.get("custom_data", {}):
        event["custom_data"]["currency"] = event["custom_data"]["currency"].upper()
    return event


def test_every_event_is_what_the_sdk_sends(vendor):
    pairs = cases()
    [ours] = render(destination, SETTINGS, [event for event, _ in pairs])
    EventRequest(pixel_id=PIXEL_ID, events=[sdk for _, sdk in pairs], test_event_code="TEST4039").execute()
    [theirs] = vendor.received()

    assert (theirs.method, theirs.path) == (ours.method, urlsplit(ours.url).path)
    assert theirs.query["access_token"] == [TOKEN]
    assert ours.header("Authorization") == f"Bearer {TOKEN}"
    form = theirs.form()
    our_body = orjson.loads(ours.body)
    assert form["test_event_code"] == our_body["test_event_code"]
    sdk_events = [normalised_sdks(orjson.loads(text)) for text in orjson.loads(form["data"])]
    our_events = [normalised_ours(event) for event in our_body["data"]]
    for mine, sdks in zip(our_events, sdk_events, strict=True):
        assert mine == sdks, mine["event_name"]


def test_full_user_data_hashes_match_the_sdks_field_by_field(vendor):
    event = with_full_traits(recent(spec_events.signed_up()))
    [ours] = render(destination, SETTINGS, [event])
    EventRequest(pixel_id=PIXEL_ID, events=[sdk_event(event, "Signed Up", CHECKOUT, None)]).execute()
    [theirs] = vendor.received()
    sdk_user = normalised_sdks(orjson.loads(orjson.loads(theirs.form()["data"])[0]))["user_data"]
    our_user = normalised_ours(orjson.loads(ours.body)["data"][0])["user_data"]
    assert set(our_user) == {*HASHED_KEYS, "external_id", "client_ip_address", "client_user_agent"}
    assert our_user == sdk_user
