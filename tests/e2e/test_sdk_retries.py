"""A client whose first request times out resends the same messageIds; nothing is stored twice.

A small HTTP proxy, bound to 127.0.0.1, sits between segment-analytics-python and
trackyard. It forwards every request to trackyard, but holds back the response to the
first one until well past the client's timeout: trackyard has stored that batch, the
client saw a timeout and resends it (same messageIds, `X-Retry-Count: 1`). trackyard's
dedupe on (source, messageId) must keep exactly one copy of each event.
"""

from __future__ import annotations

import copy
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from segment.analytics import Client

from tests.conftest import Server
from tests.e2e.sdk_support import ORDER_COMPLETED, assert_all_match, wait_for_message_ids

CLIENT_TIMEOUT_S = 1.0
HOLD_S = 4 * CLIENT_TIMEOUT_S  # the first response reaches the client after its timeout, if ever
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Seen:
    """One request as the proxy forwarded it, and trackyard's answer."""

    path: str
    headers: dict[str, str]
    message_ids: list[str]
    status: int | None = None


@dataclass
class StallingProxy:
    """Forwards to `upstream`; delays the response to the first `stall` requests by `hold` seconds."""

    upstream: str
    stall: int = 1
    hold: float = HOLD_S
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _upstream: httpx.Client | None = None

    def start(self) -> StallingProxy:
        proxy = self
        upstream = self._upstream = httpx.Client(base_url=self.upstream, timeout=10.0)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                seen = Seen(
                    self.path, {k.lower(): v for k, v in headers.items()}, _message_ids(headers, body)
                )
                with proxy._lock:
                    proxy.seen.append(seen)
                    stalled = len(proxy.seen) <= proxy.stall
                answer = upstream.post(self.path, content=body, headers=headers)
                seen.status = answer.status_code
                if stalled:
                    # trackyard has answered (so it has committed the batch); the client has not heard.
                    proxy._release.wait(proxy.hold)
                try:
                    self.send_response(answer.status_code)
                    self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
                    self.send_header("Content-Length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)
                except OSError:
                    pass  # the client gave up on this connection: that is the point

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        if self._upstream is not None:
            self._upstream.close()


def _message_ids(headers: dict[str, str], body: bytes) -> list[str]:
    if any(k.lower() == "content-encoding" and v.lower() == "gzip" for k, v in headers.items()):
        body = gzip.decompress(body)
    payload = json.loads(body)
    return [item["messageId"] for item in payload.get("batch", [payload])]


@pytest.fixture
def proxy(server: Server) -> Iterator[StallingProxy]:
    proxy = StallingProxy(server.url).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_timed_out_batch_is_resent_with_the_same_message_ids_and_stored_once(
    server: Server, proxy: StallingProxy, compressed: bool
) -> None:
    errors: list[str] = []
    client = Client(
        server.write_key,
        host=proxy.url,
        timeout=CLIENT_TIMEOUT_S,
        max_retries=3,
        gzip=compressed,
        on_error=lambda error, batch: errors.append(f"{error!r} ({len(batch)} messages)"),
    )
    sent: list[dict[str, Any]] = []
    try:
        for index in range(30):
            queued, message = client.track(
                "retry-user", "Order Completed", {**ORDER_COMPLETED, "index": index}
            )
            assert queued
            sent.append(copy.deepcopy(message))
    finally:
        worker = threading.Thread(target=client.shutdown, daemon=True)
        worker.start()
        worker.join(30)
    assert not worker.is_alive(), "the SDK did not finish within 30 s"
    assert errors == [], "the retry should have succeeded"

    stored = wait_for_message_ids(server, (message["messageId"] for message in sent))

    # The proxy saw the stalled request and its resend, with the same messageIds.
    assert len(proxy.seen) >= 2, proxy.seen
    first, resend = proxy.seen[0], proxy.seen[1]
    assert first.status == 200, "trackyard must have accepted (and stored) the stalled request"
    assert resend.status == 200, "a resent batch of already-stored events is still a success"
    assert resend.message_ids == first.message_ids
    assert resend.headers.get("x-retry-count") == "1"
    assert (first.headers.get("content-encoding") == "gzip") is compressed
    assert "x-retry-count" not in first.headers
    forwarded = [message_id for request in proxy.seen for message_id in request.message_ids]
    assert set(forwarded) == {message["messageId"] for message in sent}
    assert len(forwarded) > len(set(forwarded)), "some messageIds must have crossed the proxy twice"

    # ...and trackyard kept exactly one copy of each, unchanged.
    assert_all_match(sent, stored, channel="server")
