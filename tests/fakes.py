"""Local stand-ins for third-party APIs, which are unreachable from here.

A FakeVendor is a real HTTP server on 127.0.0.1 that records every request and answers
through a handler. Destination tests give it a handler that checks requests against the
vendor's documented wire contract and answers as the vendor would (400 on violations).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return orjson.loads(self.body)

    def form(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(self.body.decode()).items()}


Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[Captured], Reply]


def ok_json(data: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        orjson.dumps(data if data is not None else {}),
    )


def default_handler(_: Captured) -> Reply:
    return ok_json({"ok": True})


class FakeVendor:
    def __init__(self, handler: Handler = default_handler) -> None:
        self.handler = handler
        self.requests: list[Captured] = []
        self._lock = threading.Lock()
        vendor = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                captured = Captured(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with vendor._lock:
                    vendor.requests.append(captured)
                status, headers, reply = vendor.handler(captured)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeVendor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[Captured]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, predicate: Callable[[list[Captured]], bool], timeout: float = 20.0) -> list[Captured]:
        """Poll until predicate(requests) holds; fail with what arrived otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            requests = self.received()
            if predicate(requests):
                return requests
            time.sleep(0.05)
        paths = [f"{r.method} {r.path}" for r in self.received()]
        raise AssertionError(f"fake vendor did not receive the expected requests in {timeout} s; got {paths}")
