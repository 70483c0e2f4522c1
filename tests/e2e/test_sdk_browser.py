"""@segment/analytics-next (npm, pinned in tests/js) in Debian's headless Chromium against trackyard.

A page served from its own 127.0.0.1 port (so every call to trackyard is cross-origin and
goes through CORS, preflights included, since the SDK sends `Authorization`) loads an
esbuild bundle of the SDK and calls `AnalyticsBrowser.load({writeKey, cdnURL: trackyard})`.
The SDK fetches `/v1/projects/<key>/settings` from trackyard and takes the event host
and protocol from that document; nothing on the page names the collection endpoint.

Playwright records every request the page makes to trackyard: the bodies recorded are
the "sent" messages compared field by field with what trackyard stored.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO, Server, missing_service
from tests.e2e.sdk_support import (
    BURST,
    GROUP_TRAITS,
    IDENTIFY_TRAITS,
    ORDER_COMPLETED,
    PAGE_PROPERTIES,
    SCENARIO_CALLS,
    SCREEN_PROPERTIES,
    assert_all_match,
    assert_scenario_shape,
    instant_ms,
    wait_for_message_ids,
)

JS = REPO / "tests" / "js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER = "browser-user-1"
PREVIOUS = "browser-anon-1"
SHORT_PATHS = {"/v1/t", "/v1/i", "/v1/p", "/v1/s", "/v1/g", "/v1/a"}
# Load options for integrations["Segment.io"]; they override the settings document key by key.
BATCHING = {"deliveryStrategy": {"strategy": "batching", "config": {"size": 50, "timeout": 500}}}

INDEX_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>trackyard e2e</title><link rel="icon" href="data:,"></head>
<body><p>analytics-next end-to-end page</p><script src="/ajs.js"></script></body></html>
"""

# Runs in the page. Starts every call before awaiting any, as a site would; returns, as JSON,
# each call's messageId and type and whether the SDK itself counted its delivery as failed.
SCENARIO_JS = """
async ({writeKey, cdnURL, burst, segmentio, data}) => {
  const options = segmentio ? {integrations: {'Segment.io': segmentio}} : {}
  const [analytics] = await window.AnalyticsBrowser.load({writeKey, cdnURL}, options)
  const calls = [
    analytics.identify(data.user, data.identifyTraits),
    analytics.track('Order Completed', data.order),
    analytics.page('Docs', 'Pricing', data.pageProperties),
    analytics.screen('Home', data.screenProperties),
    analytics.group('group-42', data.groupTraits),
    analytics.alias(data.user, data.previous),
  ]
  for (let index = 0; index < burst; index++) {
    calls.push(analytics.track('Burst Event', {index}))
  }
  const contexts = await Promise.all(calls)
  return JSON.stringify(contexts.map((ctx) => ({
    messageId: ctx.event.messageId,
    type: ctx.event.type,
    failed: ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : null,
  })))
}
"""


@dataclass
class Site:
    """The test page's own origin: a static HTTP server on 127.0.0.1, another port than trackyard."""

    bundle: Path
    httpd: ThreadingHTTPServer = field(init=False)
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        files = {"/": (INDEX_HTML, "text/html"), "/ajs.js": (self.bundle.read_bytes(), "text/javascript")}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = files.get(urlsplit(self.path).path)
                if found is None:
                    self.send_error(404)
                    return
                body, content_type = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@dataclass
class Recorded:
    """What the page did towards trackyard, as Chromium reported it to Playwright."""

    trackyard: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)  # URL of each /v1/m post -> its outcome

    def attach(self, page: Any) -> None:
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)
        page.on(
            "console", lambda message: message.type == "error" and self.console_errors.append(message.text)
        )
        page.on("pageerror", lambda error: self.console_errors.append(f"pageerror: {error}"))

    def _failed(self, request: Any) -> None:
        self.failed.append(f"{request.url}: {request.failure}")
        if urlsplit(request.url).path == "/v1/m":
            self.metrics[request.url] = f"failed: {request.failure}"

    def _request(self, request: Any) -> None:
        if urlsplit(request.url).path == "/v1/m":
            self.metrics.setdefault(request.url, "pending")
        if request.url.startswith(self.trackyard):
            self.requests.append(
                {
                    "method": request.method,
                    "path": urlsplit(request.url).path,
                    "headers": dict(request.headers),
                    "body": request.post_data,
                }
            )

    def _response(self, response: Any) -> None:
        if urlsplit(response.url).path == "/v1/m":
            self.metrics[response.url] = f"HTTP {response.status}"
        if response.url.startswith(self.trackyard):
            self.responses.append(
                {
                    "path": urlsplit(response.url).path,
                    "status": response.status,
                    "headers": dict(response.headers),
                }
            )

    def posts(self) -> list[dict[str, Any]]:
        return [request for request in self.requests if request["method"] == "POST"]

    def wire_messages(self) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        """(message, path, envelope) for every message the SDK posted, in request order."""
        messages = []
        for request in self.posts():
            if request["path"] == "/v1/m":
                continue
            body = json.loads(request["body"])
            if request["path"] == "/v1/b":
                messages += [(item, request["path"], body) for item in body["batch"]]
            else:
                messages.append((body, request["path"], body))
        return messages


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """analytics-next from tests/js/node_modules, bundled for the browser by esbuild."""
    esbuild = JS / "node_modules" / ".bin" / "esbuild"
    if not (JS / "node_modules" / "@segment" / "analytics-next").is_dir() or not esbuild.exists():
        missing_service(
            "tests/js/node_modules is missing: run scripts/ensure-test-services.sh (npm ci in tests/js)"
        )
    out = tmp_path_factory.mktemp("ajs") / "ajs.js"
    subprocess.run(
        [
            str(esbuild),
            str(JS / "browser-entry.mjs"),
            "--bundle",
            "--format=iife",
            "--platform=browser",
            "--target=es2020",
            "--log-level=warning",
            f"--outfile={out}",
        ],
        cwd=JS,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        missing_service("Debian's chromium is not installed: run scripts/ensure-test-services.sh as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site(bundle: Path) -> Iterator[Site]:
    site = Site(bundle)
    yield site
    site.stop()


def run_in_browser(
    chromium: Any,
    site: Site,
    server: Server,
    segmentio: dict[str, Any] | None,
    *,
    linger_s: float = 0.0,
) -> tuple[list[dict[str, Any]], Recorded, list[dict[str, Any]]]:
    """Load the page, run the scenario, wait for trackyard to store it all.

    With `linger_s`, the page runs on Playwright's fake clock, which is then moved on by
    that much once everything is stored: the page "stays open" that long in no real time.
    Returns (the SDK's report per call, what Playwright recorded, the stored events).
    """
    context = chromium.new_context()
    if linger_s:
        context.clock.install()
    page = context.new_page()
    page.set_default_timeout(30_000)
    recorded = Recorded(server.url)
    recorded.attach(page)
    try:
        page.goto(site.url + "/")
        report = json.loads(
            page.evaluate(
                SCENARIO_JS,
                {
                    "writeKey": server.write_key,
                    "cdnURL": server.url,
                    "burst": BURST,
                    "segmentio": segmentio,
                    "data": {
                        "user": USER,
                        "previous": PREVIOUS,
                        "identifyTraits": IDENTIFY_TRAITS,
                        "order": ORDER_COMPLETED,
                        "pageProperties": PAGE_PROPERTIES,
                        "screenProperties": SCREEN_PROPERTIES,
                        "groupTraits": GROUP_TRAITS,
                    },
                },
            )
        )
        ids = [call["messageId"] for call in report]
        stored = wait_for_message_ids(
            server, ids, pause=lambda seconds: page.wait_for_timeout(seconds * 1000)
        )
        if linger_s:
            page.clock.fast_forward(int(linger_s * 1000))
            for _ in range(50):  # up to ~5 s for what the timers started to finish
                page.wait_for_timeout(100)
                if recorded.metrics and "pending" not in recorded.metrics.values():
                    break
        page.wait_for_timeout(100)  # let Playwright deliver the last request/response events
    finally:
        context.close()
    return report, recorded, stored


def check_common(
    report: list[dict[str, Any]], recorded: Recorded, stored: list[dict[str, Any]], site: Site, server: Server
) -> list[dict[str, Any]]:
    """Assertions both delivery strategies share; returns the messages as sent on the wire."""
    assert len(report) == SCENARIO_CALLS + BURST
    assert [call for call in report if call["failed"]] == []

    # Settings came from trackyard, cross-origin, and pointed the SDK back at it.
    write_key = server.write_key  # a CLI call: read it once
    settings = [r for r in recorded.requests if r["path"] == f"/v1/projects/{write_key}/settings"]
    assert len(settings) == 1 and settings[0]["method"] == "GET"
    assert settings[0]["headers"].get("origin", site.url) == site.url

    # CORS: every response carries an Allow-Origin the page's origin satisfies; nothing was blocked.
    assert recorded.responses, "Playwright saw no response from trackyard"
    for response in recorded.responses:
        assert response["status"] == 200, response
        assert response["headers"].get("access-control-allow-origin") in (site.url, "*"), response
    cors = [text for text in recorded.console_errors if "CORS" in text or "Access-Control" in text]
    assert cors == [], cors
    assert recorded.failed == []
    # A healthy server never makes the SDK retry.
    assert [r for r in recorded.posts() if "x-retry-count" in r["headers"]] == []

    wire = recorded.wire_messages()
    sent = [message for message, _, _ in wire]
    assert sorted(m["messageId"] for m in sent) == sorted(call["messageId"] for call in report)
    for request in recorded.posts():
        if request["path"] != "/v1/m":
            assert request["headers"].get("content-type", "").startswith("text/plain"), request["headers"]
            assert request["headers"].get("authorization", "").startswith("Basic "), request["headers"]
    assert_scenario_shape(sent, user_id=USER, previous_id=PREVIOUS)

    assert_all_match(sent, stored, channel="browser")
    by_id = {event["messageId"]: event for event in stored}
    for message, _, envelope in wire:
        event = by_id[message["messageId"]]
        assert event["context"].get("ip") == "127.0.0.1", event["context"]
        assert instant_ms(event["sentAt"]) == instant_ms(message.get("sentAt") or envelope["sentAt"])
        assert event["context"]["library"]["name"] == "analytics.js"
        if message["type"] != "page":  # page() properties override context.page (the SDK's rule)
            assert event["context"]["page"]["url"] == site.url + "/", event["context"]["page"]
        assert event["anonymousId"], "the browser always sends an anonymousId"
    assert all(event["messageId"].startswith("ajs-next-") for event in stored)
    return sent


def test_browser_sdk_standard_delivery_is_stored_field_by_field(
    chromium: Any, site: Site, server: Server
) -> None:
    report, recorded, stored = run_in_browser(chromium, site, server, None)

    sent = check_common(report, recorded, stored, site, server)

    paths = [path for _, path, _ in recorded.wire_messages()]
    assert set(paths) == SHORT_PATHS, set(paths)
    assert len(recorded.posts()) - paths.count("/v1/m") == len(sent), "one request per message"
    write_key = server.write_key
    for message, path, _ in recorded.wire_messages():
        assert path == "/v1/" + message["type"][0]
        assert message["writeKey"] == write_key


def test_browser_sdk_batching_delivery_posts_to_v1_b(chromium: Any, site: Site, server: Server) -> None:
    report, recorded, stored = run_in_browser(chromium, site, server, BATCHING)

    check_common(report, recorded, stored, site, server)

    batches = [request for request in recorded.posts() if request["path"] == "/v1/b"]
    assert batches, "the batching strategy never posted to /v1/b"
    assert {path for _, path, _ in recorded.wire_messages()} == {"/v1/b"}
    assert sum(len(json.loads(request["body"])["batch"]) for request in batches) == SCENARIO_CALLS + BURST
    assert len(batches) > 1
    write_key = server.write_key
    for request in batches:
        envelope = json.loads(request["body"])
        assert envelope["writeKey"] == write_key
        assert all("sentAt" not in item for item in envelope["batch"])


def test_browser_sdk_page_left_open_past_the_metrics_flush_logs_no_error(
    chromium: Any, site: Site, server: Server
) -> None:
    """A page that stays open for a while (35 s on a fake clock) must not log errors either.

    analytics-next would flush its remote metrics every settings.metrics.flushTimer (30 s) over
    https whatever the settings' protocol, so on a plain-http server the settings switch them off.
    """
    report, recorded, stored = run_in_browser(chromium, site, server, None, linger_s=35.0)

    assert len(stored) == SCENARIO_CALLS + BURST
    assert {call["messageId"] for call in report} == {event["messageId"] for event in stored}
    assert recorded.metrics == {}, "metrics must be off on a plain-http server"
    assert recorded.failed == []
    assert recorded.console_errors == []
