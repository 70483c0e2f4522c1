import pytest

from trackyard.pipeline import EventFilter, route


def event(**fields):
    return {"type": "track", "event": "Order Completed", "userId": "u1", **fields}


@pytest.mark.parametrize(
    ("integrations", "delivered"),
    [
        (None, True),
        ({}, True),
        ({"All": True}, True),
        ({"All": False}, False),
        ({"All": False, "Mixpanel": True}, True),
        ({"All": False, "Mixpanel": {"session_id": 1}}, True),
        ({"Mixpanel": False}, False),
        ({"mixpanel": False}, True),  # names are case-sensitive
        ({"All": False, "Amplitude": True}, False),
    ],
)
def test_integrations_object(integrations, delivered):
    reason = route(event(integrations=integrations), "Mixpanel")
    assert (reason is None) is delivered


def test_opt_in_destinations_need_their_name():
    assert route(event(), "Salesforce", opt_in=True) is not None
    assert route(event(integrations={"All": True}), "Salesforce", opt_in=True) is not None
    assert route(event(integrations={"Salesforce": True}), "Salesforce", opt_in=True) is None


def test_bundled_destinations_are_skipped_in_cloud_mode():
    bundled = event(_metadata={"bundled": ["Segment.io", "Mixpanel"], "unbundled": []})
    assert "device mode" in route(bundled, "Mixpanel")
    assert route(bundled, "Amplitude") is None


def test_event_filters_allow_and_block():
    filters = EventFilter.from_json({"allow_types": ["track", "identify"], "block_events": ["Debug"]})
    assert route(event(), "X", filters=filters) is None
    assert "blocked" in route(event(event="Debug"), "X", filters=filters)
    assert "not allowed" in route({"type": "page", "userId": "u"}, "X", filters=filters)
    only = EventFilter.from_json({"allow_events": ["Order Completed"]})
    assert route(event(event="Other"), "X", filters=only) is not None
    assert route({"type": "identify", "userId": "u"}, "X", filters=only) is None  # names filter tracks only


def test_filter_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown event types"):
        EventFilter.from_json({"allow_types": ["trak"]})
    with pytest.raises(ValueError, match="list of strings"):
        EventFilter.from_json({"block_events": "Debug"})
    assert EventFilter.from_json({"block_events": ["b", "a"]}).to_json() == {"block_events": ["a", "b"]}


def test_aliases_are_other_names_for_the_same_tool():
    assert route(event(integrations={"MailChimp": False}), "Mailchimp", aliases=("MailChimp",)) is not None
    named = event(integrations={"All": False, "Segment": True})
    assert route(named, "Segment Connections", aliases=("Segment",)) is None
    assert route(named, "Segment Connections") is not None
