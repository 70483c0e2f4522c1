"""Differential test: our contact upserts against what the official SDK (PyPI `sendgrid`) sends.

The SDK takes a `host`, so it is pointed at a local FakeVendor that records its request.
`sg.client.marketing.contacts.put(request_body=…)` is the equivalent call. Documented
differences, normalised below:
* The SDK sends the body it is given, so it is given a body built from the Spec identify
  the way SendGrid's API reference describes a contact (reserved fields by name, custom
  fields by id), independently of our translation.
* `User-Agent` and `Accept` name the SDK; they are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from sendgrid import SendGridAPIClient

from tests import spec_events
from tests.fakes import FakeVendor, ok_json
from trackyard.delivery.batching import render
from trackyard.destinations.base import parse_settings
from trackyard.destinations.sendgrid import REGION_HOSTS, SendGridSettings, destination

API_KEY = "SG.Zm9vYmFy.c2VjcmV0LXNlbmRncmlkLWtleQ"
LIST_ID = "ca7a3796-e8a8-4029-9ccb-df8937940562"


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor(lambda _: ok_json({"job_id": "job-1"}, 202)) as fake:
        yield fake


def test_a_contact_upsert_matches_the_sdks_request(vendor):
    event = spec_events.identify()
    traits, address = event["traits"], event["traits"]["address"]
    SendGridAPIClient(API_KEY, host=vendor.url).client.marketing.contacts.put(
        request_body={
            "list_ids": [LIST_ID],
            "contacts": [
                {
                    "email": traits["email"],
                    "first_name": traits["firstName"],
                    "last_name": traits["lastName"],
                    "phone_number": traits["phone"],
                    "address_line_1": address["street"],
                    "city": address["city"],
                    "state_province_region": address["state"],
                    "postal_code": address["postalCode"],
                    "country": address["country"],
                    "custom_fields": {"e1_T": traits["plan"], "e2_N": traits["logins"]},
                }
            ],
        }
    )
    [theirs] = vendor.received()
    config = parse_settings(
        SendGridSettings,
        {
            "api_key": API_KEY,
            "base_url": vendor.url,
            "list_ids": LIST_ID,
            "custom_fields": "plan: e1_T; logins: e2_N",
        },
    )
    [ours] = render(destination, config, [event])
    assert (theirs.method, theirs.path) == (ours.method, "/v3/marketing/contacts")
    assert ours.url == f"{vendor.url}/v3/marketing/contacts"
    assert theirs.headers["authorization"] == ours.header("Authorization")
    assert theirs.headers["content-type"] == ours.header("Content-Type")
    assert theirs.json() == orjson.loads(ours.body)


@pytest.mark.parametrize("region", ["global", "eu"])
def test_regional_hosts_match_the_sdks_data_residency(region):
    client = SendGridAPIClient(API_KEY)
    client.set_sendgrid_data_residency(region)
    assert REGION_HOSTS[region] == client.host
