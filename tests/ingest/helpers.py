"""Small helpers for tests that talk to a real `trackyard serve` process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from tests.conftest import Server
from trackyard.spec import format_ms, now_ms

SUCCESS = {"success": True}


def new_id(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def track(message_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "track", "userId": "u-1", "event": "Tested", **fields}
    if message_id is not None:
        body["messageId"] = message_id
    return body


def post(
    server: Server,
    path: str,
    payload: Any = None,
    *,
    key: str | None = None,
    content: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> httpx.Response:
    """POST to the server; `key` goes in Basic auth; `payload` is sent as JSON, `content` raw."""
    if content is None and payload is not None:
        content = orjson.dumps(payload)
    return httpx.post(
        f"{server.url}{path}",
        content=content,
        auth=(key, "") if key is not None else None,
        headers={"content-type": "application/json", **(headers or {})},
        timeout=timeout,
    )


def assert_success(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == SUCCESS


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """An error answer: the status, a JSON body {"code", "message"}, and CORS like every answer."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("message"), str)
    assert body["message"]
    if code is not None:
        assert body["code"] == code, body
    assert "access-control-allow-origin" in response.headers
    return body


def assert_still_serving(server: Server, key: str) -> None:
    """The process is alive and a good request is answered 200 (sent only after the commit)."""
    assert server.process is not None
    assert server.process.poll() is None, "trackyard serve died"
    assert_success(post(server, "/v1/track", track(new_id("alive")), key=key))
    assert server.process.poll() is None, "trackyard serve died"


def now_iso() -> str:
    """The current time in the stored form, for `--since` (the server runs on this host's clock)."""
    return format_ms(now_ms())


def failed(server: Server, *args: str) -> list[dict[str, Any]]:
    """`trackyard events --failed --json [args]`, parsed."""
    result = server.cli("events", "--failed", "--json", *args)
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


def stored_ids(server: Server, *args: str) -> list[str]:
    """messageIds in the log, oldest first, without the probes of assert_still_serving."""
    return [e["messageId"] for e in server.events(*args) if not e["messageId"].startswith("alive-")]
