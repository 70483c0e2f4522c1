"""Differential test: our Intercom requests against those of the official SDK (PyPI `python-intercom`).

The SDK (Fern-generated from Intercom's current 2.x API description) is pointed at a local
FakeVendor through its `base_url` and its real HTTP requests are captured. It has no Users
resource (2.x dropped it), so identify and group are compared field by field with the
2.x calls that carry the same data. Documented differences, normalised before comparing:
* Version header: the SDK sends no `Intercom-Version` (the app's default version applies);
  we pin one, 1.4 by default, because /users is only served under 1.x.
* identify: our 1.x `user_id` is the 2.x contact's `external_id`, our `last_request_at` its
  `last_seen_at`, and our avatar object `{"type": "avatar", "image_url"}` its avatar URL;
  2.x also requires `role`, which 1.x users do not have.
* group: the company object we put in the user's `companies` is compared with the SDK's
  `POST /companies` body (the same create-or-update fields in both versions).
* Events: the SDK's model types `metadata` as strings, while Intercom takes numbers and
  monetary objects (the documented metadata types), so the SDK request is built without
  model validation from our values.
* `User-Agent` and `X-Fern-*` name the SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from intercom import (
    CreateContactRequestWithExternalId,
    CreateDataEventRequestWithEmail,
    CreateDataEventRequestWithUserId,
    CreateOrUpdateCompanyRequest,
    Intercom,
)
from intercom.environment import IntercomEnvironment

from tests import spec_events
from tests.destinations.test_intercom_contract import TOKEN, settings
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request
from trackyard.destinations.intercom import REGION_HOSTS, destination


def accept(request: Captured) -> Reply:
    if request.path == "/events":
        return 202, {}, b""
    if request.path == "/companies":
        return ok_json(
            {"type": "company", "id": "6762f0dd1bb69f9f2193bb83", "company_id": "x", "app_id": "a"}
        )
    return ok_json({"type": "contact", "id": "6762f0d51bb69f9f2193bb7f", "role": "user", "workspace_id": "a"})


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(accept) as fake:
        yield fake


@pytest.fixture
def sdk(vendor: FakeVendor) -> Intercom:
    return Intercom(token=TOKEN, base_url=vendor.url)


def ours(event: dict[str, Any]) -> tuple[Request, dict[str, Any]]:
    [request] = render(destination, settings(), [event])
    return request, orjson.loads(request.body)


def theirs(vendor: FakeVendor) -> tuple[Captured, dict[str, Any]]:
    captured = vendor.received()[-1]
    return captured, orjson.loads(captured.body)


def test_region_hosts_are_the_sdks_environments():
    assert {
        "us": IntercomEnvironment.US_PRODUCTION.value,
        "eu": IntercomEnvironment.EU_PRODUCTION.value,
        "au": IntercomEnvironment.AU_PRODUCTION.value,
    } == REGION_HOSTS


# the SDK's model says metadata values are strings: its serializer warns about our numbers
SDK_METADATA_WARNING = "ignore:Pydantic serializer warnings:UserWarning"


@pytest.mark.filterwarnings(SDK_METADATA_WARNING)
@pytest.mark.parametrize(
    "make",
    [
        spec_events.product_viewed,
        spec_events.product_added,
        spec_events.checkout_started,
        spec_events.order_completed,
        spec_events.products_searched,
        spec_events.signed_up,
    ],
    ids=lambda make: make.__name__,
)
def test_events_match_the_sdks_data_event(sdk, vendor, make):
    request, body = ours(make())
    sdk.events.create(
        request=CreateDataEventRequestWithUserId.model_construct(
            user_id=body["user_id"],
            event_name=body["event_name"],
            created_at=body["created_at"],
            metadata=body["metadata"],
        )
    )
    captured, sent = theirs(vendor)
    assert (
        (captured.method, captured.path)
        == (request.method, urlsplit(request.url).path)
        == ("POST", "/events")
    )
    assert captured.headers["authorization"] == request.header("Authorization")
    assert "intercom-version" not in captured.headers and request.header("Intercom-Version") == "1.4"
    assert sent == body


@pytest.mark.filterwarnings(SDK_METADATA_WARNING)
def test_an_email_identified_event_matches_the_sdks(sdk, vendor):
    event = spec_events.signed_up()
    del event["userId"]
    _, body = ours(event)
    sdk.events.create(
        request=CreateDataEventRequestWithEmail.model_construct(
            email=body["email"],
            event_name=body["event_name"],
            created_at=body["created_at"],
            metadata=body["metadata"],
        )
    )
    assert theirs(vendor)[1] == body


def test_identify_carries_the_fields_of_the_sdks_contact(sdk, vendor):
    _, user = ours(spec_events.identify())
    sdk.contacts.create(
        request=CreateContactRequestWithExternalId(
            role="user",
            external_id=user["user_id"],
            email=user["email"],
            name=user["name"],
            phone=user["phone"],
            signed_up_at=user["signed_up_at"],
            last_seen_at=user["last_request_at"],
            custom_attributes=user["custom_attributes"],
        )
    )
    captured, contact = theirs(vendor)
    assert captured.path == "/contacts"
    normalised = {
        "role": "user",
        "external_id": user["user_id"],
        "last_seen_at": user["last_request_at"],
        **{key: value for key, value in user.items() if key not in ("user_id", "last_request_at")},
    }
    assert contact == normalised


def test_group_company_matches_the_sdks_company(sdk, vendor):
    event = spec_events.group()
    event["traits"].update(createdAt="2026-01-15T09:30:00Z", monthly_spend=99, region="EMEA")
    _, user = ours(event)
    [company] = user["companies"]
    sdk.companies.create_or_update(request=CreateOrUpdateCompanyRequest(**company))
    captured, sent = theirs(vendor)
    assert (captured.path, sent) == ("/companies", company)
    assert set(company) <= set(CreateOrUpdateCompanyRequest.model_fields)
