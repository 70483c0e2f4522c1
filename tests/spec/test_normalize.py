"""Validation and server-side normalisation of one message (contract §1.5, §1.6, §1.9, §1.13)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from trackyard.spec import Envelope, InvalidEvent, normalise, parse_ms

RECEIVED = "2025-05-01T10:00:05.300Z"
RECEIVED_MS = parse_ms(RECEIVED)
assert RECEIVED_MS is not None
CLIENT_IP = "203.0.113.7"


def server_envelope(**overrides: Any) -> Envelope:
    """A request to a server endpoint such as /v1/batch."""
    values: dict[str, Any] = {"received_ms": RECEIVED_MS, "client_ip": CLIENT_IP, "channel": "server"}
    values.update(overrides)
    return Envelope(**values)


def client_envelope(**overrides: Any) -> Envelope:
    """A request to a client endpoint such as /v1/t or /v1/b."""
    values: dict[str, Any] = {"client_endpoint": True, "channel": "browser"}
    values.update(overrides)
    return server_envelope(**values)


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u-1", "event": "Signed Up", **fields}


def rejected(message: object, envelope: Envelope | None = None, implied_type: str | None = None) -> str:
    with pytest.raises(InvalidEvent) as caught:
        normalise(message, envelope or server_envelope(), implied_type)
    assert caught.value.message  # every rejection explains itself
    return caught.value.code


# -- §1.13, the worked example -------------------------------------------------------
def worked_example() -> dict[str, Any]:
    return {
        "timestamp": "2025-05-01T10:00:00.000Z",
        "integrations": {},
        "type": "track",
        "event": "Order Completed",
        "properties": {
            "order_id": "50314b8e",
            "total": 27.5,
            "coupon": "hasbros",
            "products": [{"product_id": "507f", "price": 19, "quantity": 1}],
        },
        "context": {
            "page": {
                "path": "/checkout",
                "referrer": "",
                "search": "",
                "title": "Pay",
                "url": "https://shop.example/checkout",
            },
            "userAgent": "Mozilla/5.0",
            "locale": "en-US",
            "timezone": "Europe/Amsterdam",
            "library": {"name": "analytics.js", "version": "next-1.84.1"},
        },
        "messageId": "ajs-next-1714557600000-4f3c",
        "anonymousId": "a1b2",
        "userId": None,
        "writeKey": "WK",
        "sentAt": "2025-05-01T10:00:00.120Z",
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
    }


def test_worked_example_of_section_1_13() -> None:
    sent = worked_example()
    event = normalise(copy.deepcopy(sent), client_envelope(), "track")
    assert event["receivedAt"] == "2025-05-01T10:00:05.300Z"
    assert event["originalTimestamp"] == "2025-05-01T10:00:00.000Z"
    assert event["timestamp"] == "2025-05-01T10:00:05.180Z"  # 05.300 − (00.120 − 00.000)
    assert event["sentAt"] == "2025-05-01T10:00:00.120Z"
    assert event["context"]["ip"] == CLIENT_IP
    assert "writeKey" not in event
    assert event["messageId"] == "ajs-next-1714557600000-4f3c"
    assert event["type"] == "track"
    assert event["channel"] == "browser"
    # Everything else passes through untouched, unknown fields included.
    for name in ("event", "properties", "integrations", "anonymousId", "userId", "_metadata"):
        assert event[name] == sent[name]
    assert {k: v for k, v in event["context"].items() if k != "ip"} == sent["context"]


# -- timestamps ------------------------------------------------------------------------
def test_without_sent_at_the_timestamp_is_the_clients() -> None:
    event = normalise(track(timestamp="2025-05-01T09:59:00.000+00:00"), server_envelope())
    assert event["originalTimestamp"] == "2025-05-01T09:59:00.000Z"
    assert event["timestamp"] == "2025-05-01T09:59:00.000Z"
    assert event["receivedAt"] == RECEIVED
    assert "sentAt" not in event


def test_without_any_client_time_the_timestamp_is_received_at() -> None:
    event = normalise(track(sentAt="2025-05-01T10:00:00.120Z"), server_envelope())
    assert event["timestamp"] == RECEIVED
    assert event["receivedAt"] == RECEIVED
    assert "originalTimestamp" not in event
    assert event["sentAt"] == "2025-05-01T10:00:00.120Z"


def test_no_times_at_all() -> None:
    event = normalise(track(), server_envelope())
    assert event["timestamp"] == event["receivedAt"] == RECEIVED
    assert "originalTimestamp" not in event
    assert "sentAt" not in event


def test_envelope_sent_at_applies_when_the_message_has_none() -> None:
    envelope = server_envelope(sent_at="2025-05-01T10:00:01.000+00:00")
    event = normalise(track(timestamp="2025-05-01T10:00:00.500Z"), envelope)
    assert event["sentAt"] == "2025-05-01T10:00:01.000Z"
    assert event["timestamp"] == "2025-05-01T10:00:04.800Z"  # 05.300 − (01.000 − 00.500)

    null_sent = normalise(track(timestamp="2025-05-01T10:00:00.500Z", sentAt=None), envelope)
    assert null_sent["timestamp"] == "2025-05-01T10:00:04.800Z"


def test_message_sent_at_wins_over_the_envelopes() -> None:
    envelope = server_envelope(sent_at="2025-05-01T10:00:09.000Z")
    event = normalise(
        track(timestamp="2025-05-01T10:00:00.000Z", sentAt="2025-05-01T10:00:00.300Z"), envelope
    )
    assert event["sentAt"] == "2025-05-01T10:00:00.300Z"
    assert event["timestamp"] == "2025-05-01T10:00:05.000Z"


def test_offsets_and_microseconds_are_normalised() -> None:
    event = normalise(
        track(timestamp="2025-05-01T12:00:00.000123+02:00", sentAt="2025-05-01T10:00:00.100999+00:00"),
        server_envelope(),
    )
    assert event["originalTimestamp"] == "2025-05-01T10:00:00.000Z"
    assert event["sentAt"] == "2025-05-01T10:00:00.100Z"
    assert event["timestamp"] == "2025-05-01T10:00:05.200Z"


def test_a_future_client_clock_is_not_clamped() -> None:
    event = normalise(
        track(timestamp="2025-05-02T10:00:00.000Z", sentAt="2025-05-01T10:00:00.000Z"), server_envelope()
    )
    assert event["timestamp"] == "2025-05-02T10:00:05.300Z"


def test_original_timestamp_is_used_when_timestamp_is_absent() -> None:
    """Re-imported events carry originalTimestamp; the client time must not be lost."""
    event = normalise(track(originalTimestamp="2025-05-01T10:00:00.000Z"), server_envelope())
    assert event["originalTimestamp"] == "2025-05-01T10:00:00.000Z"
    assert event["timestamp"] == "2025-05-01T10:00:00.000Z"


def test_unpadded_timestamp_from_segments_docs() -> None:
    event = normalise(track(timestamp="2015-2-02T00:30:08.276Z"), server_envelope())
    assert event["originalTimestamp"] == "2015-02-02T00:30:08.276Z"


@pytest.mark.parametrize("value", ["yesterday", "2025-13-01T00:00:00Z", 1_746_093_600_000, True, {}, []])
def test_invalid_timestamp_is_rejected_and_kept_for_the_failure_log(value: object) -> None:
    message = track(timestamp=value)
    assert rejected(message) == "invalid_timestamp"
    # The failure log stores the message after this call: the value the reason names stays.
    assert message["timestamp"] == value


@pytest.mark.parametrize("value", ["soon", 12, False])
def test_invalid_sent_at_is_rejected(value: object) -> None:
    assert rejected(track(timestamp="2025-05-01T10:00:00Z", sentAt=value)) == "invalid_sent_at"
    assert rejected(track(), server_envelope(sent_at=value)) == "invalid_sent_at"


# -- the batch envelope ----------------------------------------------------------------
def test_envelope_context_and_integrations_merge_with_the_item_winning() -> None:
    envelope = server_envelope(
        context={"library": {"name": "envelope"}, "locale": "nl-NL"},
        integrations={"All": False, "Mixpanel": True},
    )
    event = normalise(
        track(context={"library": {"name": "item"}}, integrations={"Mixpanel": False, "Amplitude": True}),
        envelope,
    )
    assert event["context"] == {"library": {"name": "item"}, "locale": "nl-NL"}
    assert event["integrations"] == {"All": False, "Mixpanel": False, "Amplitude": True}

    bare = normalise(track(), envelope)
    assert bare["context"] == {"library": {"name": "envelope"}, "locale": "nl-NL"}
    assert bare["integrations"] == {"All": False, "Mixpanel": True}


def test_envelope_context_is_not_shared_between_messages() -> None:
    envelope = client_envelope(context={"locale": "nl-NL"})
    first = normalise(track(), envelope)
    second = normalise(track(context={"ip": "0.0.0.0"}), envelope)
    assert first["context"] == {"locale": "nl-NL", "ip": CLIENT_IP}
    assert second["context"] == {"locale": "nl-NL", "ip": "0.0.0.0"}
    assert envelope.context == {"locale": "nl-NL"}


@pytest.mark.parametrize("envelope", [client_envelope(context={"locale": "nl-NL"}), server_envelope()])
def test_the_message_as_sent_is_left_untouched(envelope: Envelope) -> None:
    sent = track(
        writeKey="wk",
        userId=42,
        timestamp="2025-05-01T09:59:00+00:00",
        context={"direct": True, "library": {"name": "x"}},
        integrations={"All": True},
    )
    before = copy.deepcopy(sent)
    event = normalise(sent, envelope)
    assert sent == before  # a failure record keeps the event as it came
    assert event["context"]["ip"] == CLIENT_IP and event["userId"] == "42" and "writeKey" not in event
    with pytest.raises(InvalidEvent):
        normalise(invalid := track(userId=None, messageId=7), envelope)
    assert invalid == track(userId=None, messageId=7)


# -- messageId -------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [{}, {"messageId": None}, {"messageId": ""}])
def test_message_id_is_assigned_when_missing(fields: dict[str, Any]) -> None:
    first = normalise(track(**fields), server_envelope())
    second = normalise(track(**fields), server_envelope())
    assert isinstance(first["messageId"], str)
    assert first["messageId"]
    assert first["messageId"] != second["messageId"]


@pytest.mark.parametrize("message_id", ["m-1", "node-next-1714557600000-abc", "x" * 100, " "])
def test_message_id_is_kept(message_id: str) -> None:
    assert normalise(track(messageId=message_id), server_envelope())["messageId"] == message_id


def test_message_id_over_100_characters_is_rejected() -> None:
    assert rejected(track(messageId="x" * 101)) == "invalid_message_id"
    assert rejected(track(messageId=10**101)) == "invalid_message_id"


@pytest.mark.parametrize("value", [True, False, {"id": 1}, ["m-1"]])
def test_message_id_of_the_wrong_type_is_rejected(value: object) -> None:
    assert rejected(track(messageId=value)) == "invalid_message_id"


# -- ids -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"), [(42, "42"), (0, "0"), (-7, "-7"), (42.0, "42"), (1.5, "1.5"), ("42", "42")]
)
def test_numeric_ids_become_strings(value: object, expected: str) -> None:
    event = normalise(
        {
            "type": "alias",
            "userId": value,
            "anonymousId": value,
            "previousId": value,
            "groupId": value,
            "messageId": value,
        },
        server_envelope(),
    )
    for name in ("userId", "anonymousId", "previousId", "groupId", "messageId"):
        assert event[name] == expected, name


@pytest.mark.parametrize(
    ("call", "field", "code"),
    [
        ({"type": "track", "event": "e", "anonymousId": "a"}, "userId", "invalid_user_id"),
        ({"type": "track", "event": "e", "userId": "u"}, "anonymousId", "invalid_anonymous_id"),
        ({"type": "group", "userId": "u"}, "groupId", "invalid_group_id"),
        ({"type": "alias", "userId": "u"}, "previousId", "invalid_previous_id"),
    ],
)
@pytest.mark.parametrize("value", [True, False, {"id": "u-1"}, ["u-1"], {}])
def test_booleans_objects_and_arrays_as_ids_are_rejected(
    call: dict[str, Any], field: str, code: str, value: object
) -> None:
    assert rejected({**call, field: value}) == code


# -- required fields -------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        {"type": "track", "event": "e"},
        {"type": "identify", "traits": {"email": "a@example.com"}},
        {"type": "page", "name": "Home"},
        {"type": "screen", "name": "Home"},
        {"type": "group", "groupId": "g"},
        {"type": "track", "event": "e", "userId": None, "anonymousId": None},
        {"type": "track", "event": "e", "userId": "", "anonymousId": ""},
    ],
)
def test_a_user_or_anonymous_id_is_required(message: dict[str, Any]) -> None:
    assert rejected(message) == "no_user_anon_id"


@pytest.mark.parametrize("fields", [{"userId": "u"}, {"anonymousId": "a"}, {"userId": 0}])
def test_either_id_is_enough(fields: dict[str, Any]) -> None:
    for call_type in ("identify", "page", "screen"):
        assert normalise({"type": call_type, **fields}, server_envelope())["type"] == call_type


@pytest.mark.parametrize("event", [None, "", "   ", 42, True, ["Signed Up"], {"name": "Signed Up"}])
def test_track_requires_an_event_name(event: object) -> None:
    message: dict[str, Any] = {"type": "track", "userId": "u"}
    if event is not None:
        message["event"] = event
    assert rejected(message) == "no_event_name"


@pytest.mark.parametrize("group_id", [None, ""])
def test_group_requires_a_group_id(group_id: object) -> None:
    message: dict[str, Any] = {"type": "group", "userId": "u", "traits": {"name": "Acme"}}
    if group_id is not None:
        message["groupId"] = group_id
    assert rejected(message) == "no_group_id"


@pytest.mark.parametrize(
    "message",
    [
        {"type": "alias", "userId": "u"},
        {"type": "alias", "userId": "u", "previousId": ""},
        {"type": "alias", "previousId": "p"},
        {"type": "alias", "anonymousId": "a", "previousId": "p"},
    ],
)
def test_alias_requires_previous_id_and_user_id(message: dict[str, Any]) -> None:
    assert rejected(message) == "no_user_previous_id"


def test_page_and_screen_need_no_name() -> None:
    assert normalise({"type": "page", "anonymousId": "a"}, client_envelope())["type"] == "page"
    assert normalise({"anonymousId": "a"}, client_envelope(), "screen")["type"] == "screen"


@pytest.mark.parametrize("call_type", [None, "Track", "purchase", "", 1, ["track"], {"name": "track"}])
def test_unknown_types_are_rejected(call_type: object) -> None:
    message: dict[str, Any] = {"userId": "u", "event": "e"}
    if call_type is not None:
        message["type"] = call_type
    assert rejected(message) == "invalid_type"


def test_the_path_implies_the_type() -> None:
    event = normalise({"type": "identify", "userId": "u", "event": "e"}, client_envelope(), "track")
    assert event["type"] == "track"


@pytest.mark.parametrize("message", [None, 42, "track", ["track"], True])
def test_a_message_must_be_an_object(message: object) -> None:
    assert rejected(message) == "invalid_event"


@pytest.mark.parametrize("name", ["properties", "traits", "context", "integrations"])
@pytest.mark.parametrize("value", [["a"], "a", 1, True])
def test_object_fields_must_be_objects(name: str, value: object) -> None:
    assert rejected(track(**{name: value})) == f"invalid_{name}"


@pytest.mark.parametrize("name", ["properties", "traits", "context", "integrations"])
def test_object_fields_may_be_null(name: str) -> None:
    normalise(track(**{name: None}), server_envelope())


def test_write_key_is_removed_and_unknown_fields_pass_through() -> None:
    event = normalise(
        track(writeKey="WK", category=None, _metadata={"nodeVersion": "22"}, vendor={"x": 1}),
        server_envelope(),
    )
    assert "writeKey" not in event
    assert event["category"] is None
    assert event["_metadata"] == {"nodeVersion": "22"}
    assert event["vendor"] == {"x": 1}


# -- context.ip and channel ------------------------------------------------------------
def test_client_endpoint_fills_context_ip() -> None:
    assert normalise(track(), client_envelope())["context"]["ip"] == CLIENT_IP
    assert normalise(track(context={"locale": "en"}), client_envelope())["context"] == {
        "locale": "en",
        "ip": CLIENT_IP,
    }


@pytest.mark.parametrize("ip", ["198.51.100.1", "0.0.0.0", None])
def test_context_ip_sent_by_the_client_is_never_overwritten(ip: str | None) -> None:
    assert normalise(track(context={"ip": ip}), client_envelope())["context"]["ip"] == ip
    envelope = server_envelope()
    assert normalise(track(context={"ip": ip, "direct": True}), envelope)["context"]["ip"] == ip


def test_server_endpoint_records_the_ip_only_when_context_direct_is_true() -> None:
    assert "ip" not in normalise(track(), server_envelope())["context"]
    assert "ip" not in normalise(track(context={"direct": False}), server_envelope())["context"]
    assert "ip" not in normalise(track(context={"direct": "true"}), server_envelope())["context"]
    direct = normalise(track(context={"direct": True}), server_envelope())
    assert direct["context"] == {"direct": True, "ip": CLIENT_IP}


def test_without_a_known_client_address_no_ip_is_invented() -> None:
    assert "ip" not in normalise(track(), client_envelope(client_ip=None))["context"]


def test_channel_comes_from_the_envelope_unless_the_message_has_one() -> None:
    assert normalise(track(), server_envelope())["channel"] == "server"
    assert normalise(track(), client_envelope(channel="mobile"))["channel"] == "mobile"
    assert normalise(track(channel="server"), client_envelope())["channel"] == "server"
