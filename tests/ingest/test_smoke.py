import httpx


def test_track_over_http_is_stored_and_printed_by_the_cli(server):
    response = httpx.post(
        f"{server.url}/v1/track",
        auth=(server.write_key, ""),
        json={"userId": "u1", "event": "Signed Up", "messageId": "m-1"},
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    [event] = server.events("--source", "default")
    assert event["messageId"] == "m-1"
    assert event["event"] == "Signed Up"
    assert event["type"] == "track"
