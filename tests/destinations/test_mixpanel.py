"""Mixpanel: the Spec scenario translated to exact requests, batching, classification, a contract fake."""

from __future__ import annotations

import base64
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests import spec_events
from tests.fakes import Captured, FakeVendor, Reply, ok_json
from trackyard.delivery.batching import plan_requests, render
from trackyard.destinations import registry
from trackyard.destinations.base import (
    Outcome,
    Request,
    Response,
    SettingsError,
    Skip,
    Verdict,
    parse_settings,
    settings_schema,
)
from trackyard.destinations.mixpanel import MixpanelSettings, destination, insert_id

TOKEN = "f2b1c3d4e5a6mixpaneltoken"
SECRET = "9a8b7c6d5e4fmixpanelsecret"
USER_ID = "97980cfea0067"
ANONYMOUS_ID = "507f191e810c19729de860ea"
EVENT_TIME = 1795860005180  # 2026-11-28T10:00:05.180Z, the scenario's `timestamp`, in ms
IMPORT_URL = "https://api.mixpanel.com/import?strict=1"
JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))

# What every browser event of the Spec scenario carries from its ids and context.
BROWSER_PROPERTIES: dict[str, Any] = {
    "distinct_id": USER_ID,
    "$device_id": ANONYMOUS_ID,
    "$user_id": USER_ID,
    "$source": "trackyard",
    "mp_lib": "trackyard: analytics.js",
    "$lib_version": "next-1.84.3",
    "ip": "203.0.113.7",
    "$current_url": "https://shop.example/checkout?utm_source=newsletter",
    "$referrer": "https://www.google.com/",
    "$locale": "en-US",
    "timezone": "Europe/Amsterdam",
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "spring_sale",
    "$browser": "Chrome",
    "$browser_version": 124.0,
}


def mixpanel_settings(**raw: str) -> MixpanelSettings:
    return parse_settings(MixpanelSettings, {"project_token": TOKEN, **raw}, "mixpanel")


def basic(credential: str) -> str:
    return "Basic " + base64.b64encode(f"{credential}:".encode()).decode()


def import_headers(credential: str = TOKEN) -> tuple[tuple[str, str], ...]:
    return (*JSON_HEADERS, ("Authorization", basic(credential)))


def decoded(request: Request) -> Any:
    return orjson.loads(request.body)


def browser_event(name: str, event: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "event": name,
        "properties": {
            **BROWSER_PROPERTIES,
            **(event.get("properties") or {}),
            "time": EVENT_TIME,
            "$insert_id": insert_id(event["messageId"]),
            **extra,
        },
    }


# -- the vendor's contract, as a fake -----------------------------------------------------

PROFILE_OPERATIONS = {"$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete"}
PLACEHOLDER_IDS = {"anon", "anonymous", "nil", "none", "null", "n/a", "00000000-0000-0000-0000-000000000000"}
INSERT_ID = re.compile(r"^[A-Za-z0-9-]{1,36}$")
MAX_RECORDS = 2000
MAX_BYTES = 2 * 1024 * 1024
EARLIEST_TIME_S = 31_536_000  # 1971-01-01


class MixpanelContract:
    """Mixpanel's ingestion API as documented: /import (strict), /engage and /groups."""

    def __init__(self, token: str = TOKEN, secret: str | None = SECRET) -> None:
        self.credentials = {basic(token)} | ({basic(secret)} if secret else set())
        self.token = token
        self.errors: list[tuple[str, int, bytes]] = []

    def __call__(self, request: Captured) -> Reply:
        status, headers, body = self.answer(request)
        if status >= 300:
            self.errors.append((request.path, status, body))
        return status, headers, body

    def answer(self, request: Captured) -> Reply:
        if request.method != "POST":
            return ok_json({"error": "method not allowed"}, status=405)
        if request.path == "/import":
            return self.import_events(request)
        if request.path in ("/engage", "/groups"):
            return self.profile_updates(request)
        return ok_json({"error": "not found"}, status=404)

    def import_events(self, request: Captured) -> Reply:
        if request.headers.get("authorization") not in self.credentials:
            return ok_json({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}, 401)
        if len(request.body) > MAX_BYTES:
            return ok_json({"code": 413, "error": f"request exceeds max limit of {MAX_BYTES} bytes"}, 413)
        records = self.json_array(request)
        if records is None:
            return ok_json(
                {"code": 400, "error": "body must be a JSON array of events", "status": "Bad Request"}, 400
            )
        if len(records) > MAX_RECORDS:
            return ok_json({"code": 400, "error": f"too many records: {len(records)} > {MAX_RECORDS}"}, 400)
        failed = [
            {"index": index, "$insert_id": _insert_id_of(record), "field": field, "message": message}
            for index, record in enumerate(records)
            for field, message in [_event_problem(record)]
            if field
        ]
        imported = len(records) - len(failed)
        if failed:
            return ok_json(
                {
                    "code": 400,
                    "error": "some data points in the request failed validation",
                    "failed_records": failed,
                    "num_records_imported": imported,
                    "status": "Bad Request",
                },
                400,
            )
        return ok_json({"code": 200, "num_records_imported": imported, "status": "OK"})

    def profile_updates(self, request: Captured) -> Reply:
        verbose = request.query.get("verbose") == ["1"]
        records = self.json_array(request)
        if records is None or len(records) > MAX_RECORDS:
            problem: str | None = "data must be a JSON array of at most 2000 updates"
        else:
            problem = next(
                filter(None, (self.profile_problem(record, request.path) for record in records)), None
            )
        if problem:  # Mixpanel answers 200 even then; the body tells
            self.errors.append((request.path, 200, problem.encode()))
        return _profile_reply(verbose, problem)

    def profile_problem(self, record: Any, path: str) -> str | None:
        if not isinstance(record, dict) or record.get("$token") != self.token:
            return "$token is missing or does not name this project"
        if path == "/engage" and not isinstance(record.get("$distinct_id"), str):
            return "$distinct_id is required"
        if path == "/groups" and not (record.get("$group_key") and record.get("$group_id")):
            return "$group_key and $group_id are required"
        operations = PROFILE_OPERATIONS & set(record)
        if len(operations) != 1:
            return f"exactly one operation expected, got {sorted(operations)}"
        return None

    @staticmethod
    def json_array(request: Captured) -> list[Any] | None:
        if not request.headers.get("content-type", "").startswith("application/json"):
            return None
        try:
            records = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return None
        return records if isinstance(records, list) else None


def _event_problem(record: Any) -> tuple[str, str]:
    """The (field, message) Mixpanel's strict mode reports for an event, or ("", "")."""
    if not isinstance(record, dict) or not isinstance(record.get("event"), str) or not record["event"]:
        return "event", "'event' must be a non-empty string"
    properties = record.get("properties")
    if not isinstance(properties, dict) or len(properties) >= 255:
        return "properties", "'properties' must be an object of fewer than 255 properties"
    moment = properties.get("time")
    if not isinstance(moment, int | float) or isinstance(moment, bool):
        return "properties.time", "'properties.time' is required: seconds or milliseconds since epoch"
    seconds = moment / 1000 if moment > 1e11 else moment
    if not EARLIEST_TIME_S <= seconds <= time.time() + 3600:
        return "properties.time", "'properties.time' is invalid: must be specified as seconds since epoch"
    distinct_id = properties.get("distinct_id")
    if not isinstance(distinct_id, str) or distinct_id.lower() in PLACEHOLDER_IDS:
        return "properties.distinct_id", "'properties.distinct_id' must be a string and not a placeholder"
    if not INSERT_ID.match(str(properties.get("$insert_id", ""))):
        return "properties.$insert_id", "'$insert_id' must be 1-36 characters of [A-Za-z0-9-]"
    return "", ""


def _insert_id_of(record: Any) -> Any:
    return record.get("properties", {}).get("$insert_id") if isinstance(record, dict) else None


def _profile_reply(verbose: bool, error: str | None) -> Reply:
    if verbose:
        return ok_json({"status": 0 if error else 1, "error": error})
    return 200, {"Content-Type": "text/plain"}, b"0" if error else b"1"


def post(request: Request) -> Response:
    reply = httpx.request(request.method, request.url, headers=dict(request.headers), content=request.body)
    return Response(reply.status_code, {k.lower(): v for k, v in reply.headers.items()}, reply.content)


def outcomes_of(request: Request, count: int) -> list[Outcome]:
    result = destination.classify(post(request), request, count)
    return result if isinstance(result, list) else [result] * count


# -- catalog and settings -----------------------------------------------------------------


def test_catalog_metadata_uses_segments_name():
    assert registry.get("mixpanel") is destination
    entry = destination.catalog_entry()
    assert (entry["slug"], entry["name"], entry["category"]) == ("mixpanel", "Mixpanel", "analytics")
    assert destination.dedupe_field == "$insert_id"


def test_missing_project_token_is_named():
    with pytest.raises(SettingsError, match="'project_token'"):
        parse_settings(MixpanelSettings, {}, "mixpanel")


def test_credentials_are_secret_and_region_is_a_choice():
    specs = {spec.name: spec for spec in settings_schema(MixpanelSettings)}
    assert specs["project_token"].secret and specs["project_token"].required
    assert specs["api_secret"].secret and not specs["api_secret"].required
    assert specs["region"].choices == ("US", "EU", "IN")
    assert specs["id_merge"].choices == ("simplified", "original")
    with pytest.raises(SettingsError, match="'region' must be one of US, EU, IN"):
        mixpanel_settings(region="AU")


# -- track --------------------------------------------------------------------------------


def test_product_viewed_is_one_import_event_with_context_properties():
    event = spec_events.product_viewed()
    [request] = render(destination, mixpanel_settings(), [event])
    assert (request.method, request.url, request.headers) == ("POST", IMPORT_URL, import_headers())
    assert decoded(request) == [
        {
            "event": "Product Viewed",
            "properties": {
                **BROWSER_PROPERTIES,
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
                "currency": "USD",
                "value": 18.99,
                "time": EVENT_TIME,
                "$insert_id": "01ea7f36-be11-56f3-b319-35a791c8bccf",
            },
        }
    ]


@pytest.mark.parametrize(
    "make_event",
    [
        spec_events.product_added,
        spec_events.checkout_started,
        spec_events.products_searched,
        spec_events.signed_up,
    ],
)
def test_track_events_keep_their_name_and_properties(make_event):
    event = make_event()
    [request] = render(destination, mixpanel_settings(), [event])
    assert decoded(request) == [browser_event(event["event"], event)]


def test_order_completed_adds_one_product_purchased_per_product():
    order = spec_events.order_completed()
    [request] = render(destination, mixpanel_settings(), [order])
    order_id_properties = {"checkout_id": "fksdjfsdjfisjf9sdfjsd9f", "order_id": "50314b8e9bcf000000000000"}
    assert request.url == IMPORT_URL
    assert decoded(request) == [
        browser_event("Order Completed", order),
        {
            "event": "Product Purchased",
            "properties": {
                **BROWSER_PROPERTIES,
                **order_id_properties,
                **spec_events.PRODUCTS[0],
                "time": EVENT_TIME - 1,
                "$insert_id": insert_id("ajs-next-1764324000000-oc-0002:product:0"),
            },
        },
        {
            "event": "Product Purchased",
            "properties": {
                **BROWSER_PROPERTIES,
                **order_id_properties,
                "product_id": "505bd76",
                "sku": "F-11",
                "category": "Games",
                "name": "Uno Card Game",
                "brand": "Mattel",
                "price": 3.0,
                "quantity": 2,
                "time": EVENT_TIME - 2,
                "$insert_id": insert_id("ajs-next-1764324000000-oc-0002:product:1"),
            },
        },
    ]


def test_order_completed_alone_when_per_product_events_are_off():
    order = spec_events.order_completed()
    [request] = render(destination, mixpanel_settings(purchase_event_per_product="false"), [order])
    assert decoded(request) == [browser_event("Order Completed", order)]


def test_event_properties_never_override_ids_time_or_insert_id():
    event = spec_events.signed_up()
    event["properties"].update(
        {"distinct_id": "x", "time": 1, "$insert_id": "x", "$user_id": "x", "$current_url": "https://mine"}
    )
    [request] = render(destination, mixpanel_settings(), [event])
    properties = decoded(request)[0]["properties"]
    assert properties["distinct_id"] == USER_ID
    assert properties["time"] == EVENT_TIME
    assert properties["$insert_id"] == insert_id(event["messageId"])
    assert properties["$user_id"] == USER_ID
    assert properties["$current_url"] == "https://mine"  # ordinary mapped properties may be overridden


def test_insert_id_is_a_stable_uuid5_of_the_message_id():
    # Fixed values: a change would give replayed events new ids, and Mixpanel would keep duplicates.
    assert insert_id("ajs-next-1764324000000-pv-0003") == "01ea7f36-be11-56f3-b319-35a791c8bccf"
    awkward = "node-next-1764324000000-ü/é:" + "x" * 80
    assert re.fullmatch(r"[0-9a-f-]{36}", insert_id(awkward))
    assert insert_id(awkward) != insert_id(awkward + "y")


def test_anonymous_event_distinct_id_follows_the_id_merge_api():
    event = spec_events.signed_up()
    del event["userId"]
    simplified = decoded(render(destination, mixpanel_settings(), [event])[0])[0]["properties"]
    original = decoded(render(destination, mixpanel_settings(id_merge="original"), [event])[0])[0][
        "properties"
    ]
    assert simplified["distinct_id"] == f"$device:{ANONYMOUS_ID}"
    assert original["distinct_id"] == ANONYMOUS_ID
    assert "$user_id" not in simplified and simplified["$device_id"] == ANONYMOUS_ID


# -- page and screen ------------------------------------------------------------------------


def test_page_is_viewed_name_with_page_properties():
    event = spec_events.page()
    [request] = render(destination, mixpanel_settings(), [event])
    assert decoded(request) == [browser_event("Viewed Pricing", event)]


def test_unnamed_page_is_loaded_a_page():
    event = spec_events.page()
    del event["name"]
    del event["properties"]["name"]
    [request] = render(destination, mixpanel_settings(), [event])
    assert decoded(request)[0]["event"] == "Loaded a Page"


def test_screen_maps_the_mobile_context():
    [request] = render(destination, mixpanel_settings(), [spec_events.screen()])
    assert decoded(request) == [
        {
            "event": "Viewed Home",
            "properties": {
                "distinct_id": USER_ID,
                "$device_id": ANONYMOUS_ID,
                "$user_id": USER_ID,
                "$source": "trackyard",
                "mp_lib": "trackyard: analytics-swift",
                "$lib_version": "1.5.0",
                "ip": "203.0.113.9",
                "$app_name": "Shop",
                "$app_version_string": "3.2.1",
                "$app_build_number": "321",
                "$manufacturer": "Apple",
                "$model": "iPhone15,2",
                "$device_type": "ios",
                "$os": "iOS",
                "$os_version": "17.1",
                "variation": "blue",
                "time": EVENT_TIME,
                "$insert_id": insert_id("ios-0009"),
            },
        }
    ]


# -- identify, group, alias -------------------------------------------------------------------

PROFILE_SET = {
    "$email": "peter@example.com",
    "$first_name": "Peter",
    "$last_name": "Gibbons",
    "$name": "Peter Gibbons",
    "$phone": "+1 (555) 010-9999",
    "$created": "2026-01-15T09:30:00.000Z",
    "plan": "premium",
    "logins": 5,
    "address": {
        "city": "San Francisco",
        "country": "US",
        "postalCode": "94107",
        "state": "CA",
        "street": "6th St",
    },
}


def test_identify_sets_the_profile_with_reserved_names():
    [request] = render(destination, mixpanel_settings(), [spec_events.identify()])
    assert (request.method, request.url, request.headers) == (
        "POST",
        "https://api.mixpanel.com/engage?verbose=1",
        JSON_HEADERS,
    )
    assert decoded(request) == [
        {"$token": TOKEN, "$distinct_id": USER_ID, "$ip": "203.0.113.7", "$set": PROFILE_SET}
    ]


def test_identify_in_original_id_merge_also_links_the_ids():
    identify_request, engage_request = render(
        destination, mixpanel_settings(id_merge="original"), [spec_events.identify()]
    )
    assert (identify_request.url, identify_request.headers) == (IMPORT_URL, import_headers())
    assert decoded(identify_request) == [
        {
            "event": "$identify",
            "properties": {
                "distinct_id": USER_ID,
                "$identified_id": USER_ID,
                "$anon_id": ANONYMOUS_ID,
                "token": TOKEN,
                "time": EVENT_TIME,
                "$insert_id": insert_id("ajs-next-1764324000000-id-0001:identify"),
            },
        }
    ]
    assert decoded(engage_request)[0]["$set"] == PROFILE_SET


def test_identify_builds_name_from_first_and_last_name():
    event = spec_events.identify()
    del event["traits"]["name"]
    [request] = render(destination, mixpanel_settings(), [event])
    assert decoded(request)[0]["$set"]["$name"] == "Peter Gibbons"


def test_identify_without_traits_is_skipped_in_simplified_id_merge():
    event = spec_events.identify()
    del event["traits"]
    with pytest.raises(Skip):
        destination.translate(event, mixpanel_settings())


def test_group_sets_the_group_profile():
    [request] = render(destination, mixpanel_settings(), [spec_events.group()])
    assert (request.url, request.headers) == ("https://api.mixpanel.com/groups?verbose=1", JSON_HEADERS)
    assert decoded(request) == [
        {
            "$token": TOKEN,
            "$group_key": "$group_id",
            "$group_id": "0e8c78ea9d97a7b8185e8632",
            "$set": {
                "$name": "Initech",
                "industry": "Technology",
                "employees": 329,
                "plan": "enterprise",
                "website": "https://initech.example",
            },
        }
    ]


def test_group_key_trait_names_the_group():
    event = spec_events.group()
    event["traits"]["company"] = "initech"
    [request] = render(destination, mixpanel_settings(group_key="company"), [event])
    record = decoded(request)[0]
    assert (record["$group_key"], record["$group_id"]) == ("company", "initech")


def test_alias_creates_an_alias_in_original_id_merge():
    [request] = render(destination, mixpanel_settings(id_merge="original"), [spec_events.alias()])
    assert (request.url, request.headers) == (IMPORT_URL, import_headers())
    assert decoded(request) == [
        {
            "event": "$create_alias",
            "properties": {
                "distinct_id": ANONYMOUS_ID,
                "alias": USER_ID,
                "token": TOKEN,
                "time": EVENT_TIME,
                "$insert_id": insert_id("ajs-next-1764324000000-al-0011"),
            },
        }
    ]


def test_alias_is_skipped_in_simplified_id_merge():
    with pytest.raises(Skip, match="Simplified ID Merge has no alias"):
        destination.translate(spec_events.alias(), mixpanel_settings())


# -- hosts and auth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("US", "https://api.mixpanel.com"),
        ("EU", "https://api-eu.mixpanel.com"),
        ("IN", "https://api-in.mixpanel.com"),
    ],
)
def test_region_picks_the_host(region, host):
    requests = render(
        destination, mixpanel_settings(region=region), [spec_events.identify(), spec_events.signed_up()]
    )
    assert sorted(request.url for request in requests) == [
        f"{host}/engage?verbose=1",
        f"{host}/import?strict=1",
    ]


def test_api_secret_authenticates_import_and_base_url_overrides_the_host():
    settings = mixpanel_settings(api_secret=SECRET, base_url="http://127.0.0.1:9/mp/")
    [request] = render(destination, settings, [spec_events.signed_up()])
    assert request.url == "http://127.0.0.1:9/mp/import?strict=1"
    assert request.header("Authorization") == basic(SECRET)


# -- batching -----------------------------------------------------------------------------------


def numbered_tracks(count: int, padding: str = "") -> list[dict[str, Any]]:
    events = []
    for number in range(count):
        event = spec_events.signed_up()
        event["messageId"] = f"m-{number}"
        event["properties"]["padding"] = padding
        events.append(event)
    return events


def test_2500_events_are_cut_at_2000_per_request_in_order():
    requests = render(destination, mixpanel_settings(), numbered_tracks(2500))
    batches = [decoded(request) for request in requests]
    assert [len(batch) for batch in batches] == [2000, 500]
    insert_ids = [event["properties"]["$insert_id"] for batch in batches for event in batch]
    assert insert_ids == [insert_id(f"m-{number}") for number in range(2500)]


def test_batches_stay_under_two_megabytes():
    requests = render(destination, mixpanel_settings(), numbered_tracks(1200, padding="x" * 4000))
    assert len(requests) == 3
    assert all(len(request.body) <= 2_000_000 for request in requests)
    assert sum(len(decoded(request)) for request in requests) == 1200


# -- classification -------------------------------------------------------------------------------


def import_request(count: int = 3) -> Request:
    return render(destination, mixpanel_settings(), numbered_tracks(count))[0]


def engage_request() -> Request:
    return render(destination, mixpanel_settings(), [spec_events.identify()])[0]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"content-type": "application/json", **(headers or {})}, orjson.dumps(body))


def test_import_success_is_delivered():
    response = json_response(200, {"code": 200, "num_records_imported": 3, "status": "OK"})
    assert destination.classify(response, import_request(), 3).verdict is Verdict.DELIVERED


def test_strict_import_400_gives_up_only_the_failed_records():
    response = json_response(
        400,
        {
            "code": 400,
            "error": "some data points in the request failed validation",
            "failed_records": [
                {
                    "index": 1,
                    "insert_id": "13c0b661-f48b-51cd-ba54-97c5999169c0",
                    "field": "properties.time",
                    "message": "'properties.time' is invalid: must be specified as seconds since epoch",
                }
            ],
            "num_records_imported": 2,
            "status": "Bad Request",
        },
    )
    outcomes = destination.classify(response, import_request(), 3)
    assert [outcome.verdict for outcome in outcomes] == [
        Verdict.DELIVERED,
        Verdict.GIVE_UP,
        Verdict.DELIVERED,
    ]
    assert outcomes[1].reason == (
        "Mixpanel rejected the event: properties.time: "
        "'properties.time' is invalid: must be specified as seconds since epoch"
    )


def test_400_without_failed_records_gives_up_the_request():
    response = json_response(400, {"code": 400, "error": "unable to parse body", "status": "Bad Request"})
    outcome = destination.classify(response, import_request(), 3)
    assert outcome.verdict is Verdict.GIVE_UP
    assert "unable to parse body" in outcome.reason


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}),
        (403, {"code": 403, "error": "Forbidden", "status": "Forbidden"}),
        (413, {"code": 413, "error": "request exceeds max limit of 2097152 bytes"}),
    ],
)
def test_auth_and_size_errors_give_up_with_the_body(status, body):
    outcome = destination.classify(json_response(status, body), import_request(), 3)
    assert outcome.verdict is Verdict.GIVE_UP
    assert outcome.reason.startswith(f"HTTP {status}: ") and body["error"] in outcome.reason


def test_429_is_retried_honouring_retry_after_when_given():
    body = {
        "code": 429,
        "error": "Project exceeded rate limits. Please retry the request with exponential backoff.",
        "status": "Too Many Requests",
    }
    plain = destination.classify(json_response(429, body), import_request(), 3)
    told = destination.classify(json_response(429, body, {"retry-after": "7"}), import_request(), 3)
    assert (plain.verdict, plain.retry_after) == (Verdict.RETRY, None)
    assert (told.verdict, told.retry_after) == (Verdict.RETRY, 7.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(status):
    outcome = destination.classify(Response(status, {}, b"upstream trouble"), import_request(), 3)
    assert outcome.verdict is Verdict.RETRY


def test_profile_update_status_decides_the_outcome():
    delivered = destination.classify(json_response(200, {"status": 1, "error": None}), engage_request(), 1)
    rejected = destination.classify(
        json_response(200, {"status": 0, "error": "$set must be an object"}), engage_request(), 1
    )
    assert delivered.verdict is Verdict.DELIVERED
    assert (rejected.verdict, rejected.reason) == (
        Verdict.GIVE_UP,
        "Mixpanel rejected the update: $set must be an object",
    )


# -- against the contract fake ----------------------------------------------------------------------


def test_the_whole_scenario_is_accepted_by_the_contract_fake():
    contract = MixpanelContract(secret=None)
    with FakeVendor(contract) as fake:
        settings = mixpanel_settings(id_merge="original", base_url=fake.url)
        payloads = [
            (index, payload)
            for index, event in enumerate(spec_events.scenario())
            for payload in destination.translate(event, settings)
        ]
        planned = plan_requests(destination, settings, payloads)
        outcomes = [outcome for plan in planned for outcome in outcomes_of(plan.request, len(plan.items))]
        paths = sorted(urlsplit(plan.request.url).path for plan in planned)
    assert contract.errors == []
    assert paths == ["/engage", "/groups", "/import"]
    assert len(outcomes) == len(payloads) == 14  # 11 messages, 2 Product Purchased, $identify
    assert {outcome.verdict for outcome in outcomes} == {Verdict.DELIVERED}


def test_the_fake_rejects_a_wrong_token_with_mixpanels_401():
    with FakeVendor(MixpanelContract()) as fake:
        request = render(
            destination,
            mixpanel_settings(project_token="wrong", base_url=fake.url),
            [spec_events.signed_up()],
        )[0]
        response = post(request)
    assert response.status == 401
    assert response.json() == {"code": 401, "error": "Invalid credentials", "status": "Unauthorized"}
    assert destination.classify(response, request, 1).verdict is Verdict.GIVE_UP


def test_the_fake_rejects_bad_events_and_only_those_give_up():
    good, bad_time, bad_id = numbered_tracks(3)
    with FakeVendor(MixpanelContract()) as fake:
        request = render(destination, mixpanel_settings(base_url=fake.url), [good, bad_time, bad_id])[0]
        body = decoded(request)
        body[1]["properties"]["time"] *= 1000  # microseconds: the wrong unit
        body[2]["properties"]["$insert_id"] = (
            "node-next-1764324000000-2f1e8a4c-9b7d-4e21-8c3a"  # raw, 47 chars
        )
        broken = Request(request.method, request.url, request.headers, orjson.dumps(body))
        response = post(broken)
    assert response.status == 400
    assert [record["index"] for record in response.json()["failed_records"]] == [1, 2]
    outcomes = destination.classify(response, broken, 3)
    assert [outcome.verdict for outcome in outcomes] == [Verdict.DELIVERED, Verdict.GIVE_UP, Verdict.GIVE_UP]


def test_the_fake_rejects_a_profile_update_without_the_token():
    with FakeVendor(MixpanelContract()) as fake:
        request = render(destination, mixpanel_settings(base_url=fake.url), [spec_events.identify()])[0]
        body = decoded(request)
        del body[0]["$token"]
        broken = Request(request.method, request.url, request.headers, orjson.dumps(body))
        outcome = destination.classify(post(broken), broken, 1)
    assert outcome.verdict is Verdict.GIVE_UP
    assert "$token" in outcome.reason
