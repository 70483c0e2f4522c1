"""Differential test: our member upserts, tags and events against the official SDK
(PyPI `mailchimp-marketing`).

The SDK builds its URL from `https://server.api.mailchimp.com/3.0`, `server` being the API
key's data centre; the test compares that host with ours, then points the SDK's base at a
local FakeVendor (its `api_client.host`) to record the requests of `set_list_member`,
`update_list_member_tags` and `create_list_member_event`. Documented differences,
normalised below:
* Basic auth: Mailchimp takes any user name with the API key as password; the SDK sends
  `user`, we send `trackyard`, so only the password is compared.
* The SDK sends the body it is given, so it is given the one Mailchimp's reference
  describes, built from the Spec event independently of our translation (merge tags as
  Segment names them, event properties as strings, `occurred_at` ISO-8601).
* `User-Agent` names the SDK; it is not compared.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import mailchimp_marketing
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, parse_settings
from trackyard.destinations.mailchimp import MailchimpSettings, api_root, destination

API_KEY = "3f9c2d1e0b8a7f6e5d4c3b2a19087f6e-us6"
LIST_ID = "a1b2c3d4e5"


def member_or_nothing(request: Captured) -> Reply:
    if request.method == "PUT":
        return ok_json({"id": request.path.rsplit("/", 1)[1]})
    return 204, {}, b""


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(member_or_nothing) as fake:
        yield fake


@pytest.fixture
def sdk(vendor: FakeVendor) -> mailchimp_marketing.Client:
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": API_KEY})
    client.api_client.host = f"{vendor.url}/3.0"
    return client


def ours(event: dict[str, Any], vendor: FakeVendor, **extra: str) -> list[Request]:
    raw = {"api_key": API_KEY, "list_id": LIST_ID, "base_url": f"{vendor.url}/3.0", **extra}
    return render(destination, parse_settings(MailchimpSettings, raw), [event])


def password(header: str) -> str:
    return base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")[2]


def assert_same_request(request: Request, theirs: Captured, vendor: FakeVendor) -> None:
    assert (theirs.method, f"{vendor.url}{theirs.path}") == (request.method, request.url)
    assert password(theirs.headers["authorization"]) == password(request.header("Authorization")) == API_KEY
    assert theirs.headers["content-type"] == request.header("Content-Type")
    assert theirs.json() == orjson.loads(request.body)


def test_the_data_centre_host_matches_the_sdks():
    client = mailchimp_marketing.Client()
    client.set_config({"api_key": API_KEY})
    assert api_root(API_KEY) == client.api_client.host.replace("server", client.api_client.server)


def test_member_upsert_and_tags_match_the_sdks(sdk, vendor):
    event = spec_events.identify()
    traits, address = event["traits"], event["traits"]["address"]
    member_hash = hashlib.md5(traits["email"].lower().encode()).hexdigest()
    sdk.lists.set_list_member(
        LIST_ID,
        member_hash,
        {
            "email_address": traits["email"],
            "status_if_new": "subscribed",
            "merge_fields": {
                "FNAME": traits["firstName"],
                "LNAME": traits["lastName"],
                "PHONE": traits["phone"],
                "ADDRESS": {
                    "addr1": address["street"],
                    "city": address["city"],
                    "state": address["state"],
                    "zip": address["postalCode"],
                    "country": address["country"],
                },
                "NAME": traits["name"],
                "PLAN": traits["plan"],
                "LOGINS": traits["logins"],
                "CREATEDAT": traits["createdAt"],
            },
        },
    )
    sdk.lists.update_list_member_tags(
        LIST_ID, member_hash, {"tags": [{"name": "vip", "status": "active"}], "is_syncing": False}
    )
    upsert, tags = ours(event, vendor, tags="vip")
    theirs_upsert, theirs_tags = vendor.received()
    assert_same_request(upsert, theirs_upsert, vendor)
    assert_same_request(tags, theirs_tags, vendor)


def test_a_member_event_matches_the_sdks(sdk, vendor):
    event = spec_events.signed_up()
    member_hash = hashlib.md5(event["context"]["traits"]["email"].encode()).hexdigest()
    sdk.lists.create_list_member_event(
        LIST_ID,
        member_hash,
        {
            "name": "Signed_Up",
            "properties": {"plan": "pro", "trial": "true", "seats": "3"},
            "occurred_at": "2026-11-28T10:00:05+00:00",
            "is_syncing": False,
        },
    )
    [request] = ours(event, vendor)
    [theirs] = vendor.received()
    assert_same_request(request, theirs, vendor)
