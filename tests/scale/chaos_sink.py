"""A lean receiver for the webhook destination under load: it counts messageIds instead of
keeping every request (FakeVendor keeps them all), and checks the webhook's wire contract on
each request: POST to the configured path, `Content-Type: application/json`, a JSON array of
Segment messages when batching, and `X-Signature` = hex HMAC-SHA1 of the first event's JSON.
A violation is answered 400 (the worker then dead-letters: the events go missing, and the
test says why through `violations`)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from trackyard.delivery.worker import partition_of

PATH = "/hook"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sink: WebhookSink, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.sink = sink

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection reset is a worker SIGKILLed mid-request; anything else is a sink bug."""
        error = sys.exc_info()[1]
        with self.sink._lock:
            if isinstance(error, ConnectionError):
                self.sink.aborted += 1
            else:
                self.sink.violations.append(f"the sink failed: {error!r}")


class WebhookSink:
    def __init__(self, secret: str, partitions: int) -> None:
        self.secret = secret.encode()
        self.partitions = partitions
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.arrivals: list[tuple[float, int]] = []  # (time.monotonic(), partition) per request
        self.violations: list[str] = []
        self.first_at = 0.0
        self.last_at = 0.0
        self._lock = threading.Lock()
        self.aborted = 0  # requests cut short by a worker killed while sending
        self._server = _Server(self, self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    def __enter__(self) -> WebhookSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def longest_silences(self, since: float, until: float) -> list[float]:
        """Per partition, the longest time between two requests within [since, until]: how long
        a partition went undelivered while its worker was replaced (a figure, not a check)."""
        with self._lock:
            arrivals = list(self.arrivals)
        silences = []
        for partition in range(self.partitions):
            times = [since, *(t for t, p in arrivals if p == partition and since <= t <= until), until]
            silences.append(max(b - a for a, b in itertools.pairwise(times)))
        return silences

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was delivered
                    with sink._lock:
                        sink.aborted += 1
                    self.close_connection = True
                    return
                problem = sink._accept(self.path, self.headers.get("Content-Type", ""), self.headers, body)
                self._answer(400 if problem else 200, problem or "ok")

            def do_GET(self) -> None:
                with sink._lock:
                    sink.violations.append(f"GET {self.path}: the webhook only POSTs")
                self._answer(405, "POST only")

            def _answer(self, status: int, text: str) -> None:
                reply = orjson.dumps({"result": text})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler

    def _accept(self, path: str, content_type: str, headers: Any, body: bytes) -> str | None:
        """Count the batch's messageIds, or return what is wrong with the request."""
        problem = self._check(path, content_type, headers, body)
        now = time.monotonic()
        with self._lock:
            if problem:
                self.violations.append(problem)
                return problem
            self.requests += 1
            self.first_at = self.first_at or now
            self.last_at = now
            events = orjson.loads(body)
            self.counts.update(event["messageId"] for event in events)
            self.arrivals.append((now, partition_of(events[0], self.partitions)))
        return None

    def _check(self, path: str, content_type: str, headers: Any, body: bytes) -> str | None:
        if path != PATH:
            return f"POST to {path}, not {PATH}"
        if content_type.split(";")[0].strip() != "application/json":
            return f"Content-Type {content_type!r}, not application/json"
        try:
            events = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return f"body is not JSON: {exc}"
        if not isinstance(events, list) or not events:
            return "a batching webhook sends a non-empty JSON array"
        if any(not isinstance(e, dict) or not e.get("messageId") or e.get("type") != "track" for e in events):
            return "every element must be a track message with a messageId"
        expected = hmac.new(self.secret, orjson.dumps(events[0]), hashlib.sha1).hexdigest()
        if headers.get("X-Signature") != expected:
            return f"X-Signature {headers.get('X-Signature')!r} does not sign the first event"
        return None
