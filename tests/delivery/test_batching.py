from trackyard.delivery.batching import cut_batches, render
from trackyard.destinations.base import Batching, Payload, parse_settings
from trackyard.destinations.registry import get


def test_batches_are_cut_by_count_and_bytes_keeping_log_order_per_endpoint():
    payloads = [(i, Payload("a" if i % 3 else "b", {"n": i, "pad": "x" * 50})) for i in range(20)]
    runs = cut_batches(payloads, Batching(max_events=4, max_bytes=10_000))
    for endpoint, run in runs:
        assert len(run) <= 4
        assert all(payloads[tag][1].endpoint == endpoint for tag, _ in run)
    tags = {endpoint: [tag for _, run in runs if _ == endpoint for tag, _ in run] for endpoint in ("a", "b")}
    assert tags["b"] == [0, 3, 6, 9, 12, 15, 18]
    assert sorted(tag for _, run in runs for tag, _ in run) == list(range(20))
    small = cut_batches(payloads, Batching(max_events=100, max_bytes=200))
    assert all(len(run) <= 2 for _, run in small)


def test_render_builds_webhook_batches_signed_over_the_first_event():
    hook = get("webhook")
    settings = parse_settings(
        hook.Settings, {"url": "http://127.0.0.1:9/x", "batch_size": "2", "shared_secret": "k"}
    )
    events = [{"type": "track", "event": str(i), "userId": "u", "messageId": f"m{i}"} for i in range(3)]
    requests = render(hook, settings, events)
    assert [len(r.body) > 0 for r in requests] == [True, True]
    import hashlib
    import hmac

    import orjson

    assert orjson.loads(requests[0].body) == events[:2]
    expected = hmac.new(b"k", orjson.dumps(events[0]), hashlib.sha1).hexdigest()
    assert requests[0].header("X-Signature") == expected
    single = parse_settings(hook.Settings, {"url": "http://127.0.0.1:9/x", "shared_secret": "k"})
    [first, *_] = render(hook, single, events)
    assert first.header("X-Signature") == hmac.new(b"k", first.body, hashlib.sha1).hexdigest()
