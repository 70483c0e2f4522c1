"""Differential test: our Klaviyo bulk jobs against what the official SDK (PyPI `klaviyo-api`) sends.

The SDK is pointed at a local FakeVendor with its own `test_host` option; what it sends is
captured there. Its `bulk_create_events` and `bulk_import_profiles` calls are the
equivalents of ours. Documented differences, normalised below:
* The SDK serialises every optional field it knows, unset ones as `null`, and the
  `backfill` flag at its default `false`; Klaviyo reads a null or absent field alike, so
  nulls and `backfill: false` are removed before comparing.
* `time`: the SDK sends a `datetime` as ISO-8601; Klaviyo truncates event times to the
  second, so the SDK is given the event's timestamp truncated to the second.
* `phone_number`: the SDK sends what it is given; it is given the E.164 form of the
  trait (`+1 (555) 010-9999` → `+15550109999`), which our translation derives.
* `User-Agent` names the SDK; it is not compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from klaviyo_api import KlaviyoAPI
from openapi_client.models import EventsBulkCreateJob, ProfileImportJobCreateQuery

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import Request, parse_settings
from trackyard.destinations.klaviyo import KlaviyoSettings, destination

API_KEY = "pk_4f1c0ffee5a1e2b3c4d5e6f7a8b9c0d1e2"
SETTINGS = parse_settings(KlaviyoSettings, {"api_key": API_KEY, "list_id": "Y6nRLr"})
COMPARED_HEADERS = ("authorization", "revision", "accept", "content-type")


def accept_job(request: Captured) -> Reply:
    job_type = "profile-bulk-import-job" if "profile" in request.path else "event-bulk-create-job"
    return ok_json({"data": {"type": job_type, "id": "job-1"}}, 202)


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(accept_job) as fake:
        yield fake


@pytest.fixture
def sdk(vendor: FakeVendor) -> KlaviyoAPI:
    return KlaviyoAPI(
        API_KEY, test_host=vendor.url, max_retries=0, options={"USE_DICTIONARY_FOR_RESPONSE_DATA": True}
    )


def normalised(value: Any) -> Any:
    """Without nulls and the default `backfill: false` (see the module docstring)."""
    if isinstance(value, dict):
        return {
            key: normalised(item)
            for key, item in value.items()
            if item is not None and not (key == "backfill" and item is False)
        }
    if isinstance(value, list):
        return [normalised(item) for item in value]
    return value


def sent_by_sdk(vendor: FakeVendor) -> Captured:
    return vendor.received()[-1]


def assert_same_request(ours: Request, theirs: Captured) -> None:
    assert (theirs.method, theirs.path) == (ours.method, ours.url.removeprefix("https://a.klaviyo.com"))
    assert {name: theirs.headers[name] for name in COMPARED_HEADERS} == {
        name: ours.header(name) for name in COMPARED_HEADERS
    }
    assert normalised(theirs.json()) == orjson.loads(ours.body)


def truncated_time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"]).replace(microsecond=0)


def test_our_jobs_pass_through_the_sdks_models_unchanged(sdk, vendor):
    events = [event for event in spec_events.scenario() if event["type"] in ("identify", "track")]
    for request in render(destination, SETTINGS, events):
        document = orjson.loads(request.body)
        if request.url.endswith("/profile-bulk-import-jobs"):
            sdk.Profiles.bulk_import_profiles(ProfileImportJobCreateQuery.from_dict(document))
        else:
            sdk.Events.bulk_create_events(EventsBulkCreateJob.from_dict(document))
        assert_same_request(request, sent_by_sdk(vendor))


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
def test_a_track_matches_the_event_the_sdk_builds_from_the_same_fields(sdk, vendor, make):
    event = make()
    properties = event["properties"]
    amount = properties.get("revenue", properties.get("value"))
    value = {"value": amount, "value_currency": properties["currency"]} if amount is not None else {}
    sdk.Events.bulk_create_events(
        EventsBulkCreateJob.from_dict(
            {
                "data": {
                    "type": "event-bulk-create-job",
                    "attributes": {
                        "events-bulk-create": {
                            "data": [
                                {
                                    "type": "event-bulk-create",
                                    "attributes": {
                                        "profile": {
                                            "data": {
                                                "type": "profile",
                                                "attributes": {
                                                    "external_id": event["userId"],
                                                    "anonymous_id": event["anonymousId"],
                                                    "email": event["context"]["traits"]["email"],
                                                },
                                            }
                                        },
                                        "events": {
                                            "data": [
                                                {
                                                    "type": "event",
                                                    "attributes": {
                                                        "properties": properties,
                                                        "time": truncated_time(event),
                                                        "metric": {
                                                            "data": {
                                                                "type": "metric",
                                                                "attributes": {"name": event["event"]},
                                                            }
                                                        },
                                                        "unique_id": event["messageId"],
                                                        **value,
                                                    },
                                                }
                                            ]
                                        },
                                    },
                                }
                            ]
                        }
                    },
                }
            }
        )
    )
    theirs = normalised(sent_by_sdk(vendor).json())["data"]["attributes"]["events-bulk-create"]["data"]
    [request] = render(destination, SETTINGS, [event])
    ours = orjson.loads(request.body)["data"]["attributes"]["events-bulk-create"]["data"]
    assert ours[0] == theirs[0]


def test_identify_matches_the_profile_the_sdk_builds_from_the_traits(sdk, vendor):
    event = spec_events.identify()
    traits = event["traits"]
    address = traits["address"]
    sdk.Profiles.bulk_import_profiles(
        ProfileImportJobCreateQuery.from_dict(
            {
                "data": {
                    "type": "profile-bulk-import-job",
                    "attributes": {
                        "profiles": {
                            "data": [
                                {
                                    "type": "profile",
                                    "attributes": {
                                        "email": traits["email"],
                                        "phone_number": "+15550109999",
                                        "external_id": event["userId"],
                                        "first_name": traits["firstName"],
                                        "last_name": traits["lastName"],
                                        "location": {
                                            "address1": address["street"],
                                            "city": address["city"],
                                            "region": address["state"],
                                            "zip": address["postalCode"],
                                            "country": address["country"],
                                        },
                                        "properties": {
                                            key: traits[key]
                                            for key in ("name", "plan", "logins", "createdAt")
                                        },
                                    },
                                }
                            ]
                        }
                    },
                    "relationships": {"lists": {"data": [{"type": "list", "id": "Y6nRLr"}]}},
                }
            }
        )
    )
    [request] = render(destination, SETTINGS, [event])
    assert_same_request(request, sent_by_sdk(vendor))
