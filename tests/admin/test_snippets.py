"""The install snippets of a source's page work as pasted: each is taken from the rendered
page and run unchanged with the real SDK (npm packages pinned in tests/js), and its events
must be stored under that source. The Python snippet is run by the journey test.

The tests share one server; each installs the snippets of a source of its own."""

from __future__ import annotations

import html
import re
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import admin_token, api, browser_session, new_source, wait_until
from tests.conftest import REPO, Server, missing_service, require_binary

JS = REPO / "tests" / "js"
SITE = (
    "http://shop.example.test"  # the page's origin: Playwright answers for it, so every call is cross-origin
)


def snippets_of(server: Server, source: str) -> dict[str, str]:
    """The code of each snippet as a new source's page renders it."""
    new_source(server, source)
    with browser_session(server, admin_token(server)) as (client, _):
        page = client.get(f"/sources/{source}").text
    found = re.findall(r'<pre class="code" id="snippet-(\w+)">(.*?)</pre>', page, re.DOTALL)
    return {name: html.unescape(code) for name, code in found}


def stored_names(server: Server, source: str) -> list[str]:
    """`type name` of each stored event of a source, oldest first."""
    with api(server) as client:
        return [f"{e['type']} {e['name']}".strip() for e in client.get(f"/sources/{source}/events").json()]


def node_modules() -> Path:
    modules = JS / "node_modules"
    if not (modules / "@segment" / "analytics-node").is_dir():
        missing_service(
            "tests/js/node_modules is missing: run scripts/ensure-test-services.sh (npm ci in tests/js)"
        )
    return modules


def test_the_curl_snippet_works_as_pasted(shared_server):
    require_binary("curl")
    snippet = snippets_of(shared_server, "curl-site")["curl"]
    result = subprocess.run(["bash", "-c", snippet], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == '{"success":true}', result
    assert stored_names(shared_server, "curl-site") == ["track Signed Up"]


def test_the_node_snippet_works_as_pasted(shared_server, tmp_path):
    node = require_binary("node")
    (tmp_path / "node_modules").symlink_to(node_modules())
    (tmp_path / "track.mjs").write_text(snippets_of(shared_server, "node-site")["node"])
    result = subprocess.run([node, "track.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(stored_names(shared_server, "node-site")) == ["identify", "track Signed Up"]


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site(shared_server: Server, tmp_path: Path) -> Iterator[str]:
    """A page on its own 127.0.0.1 origin running the browser snippet, exactly as shown,
    bundled by esbuild for a plain <script>: every call to trackyard is cross-origin."""
    esbuild = node_modules() / ".bin" / "esbuild"
    root = tmp_path / "site"
    root.mkdir()
    (tmp_path / "snippet.mjs").write_text(snippets_of(shared_server, "browser-site")["browser"])
    (tmp_path / "node_modules").symlink_to(node_modules())
    command = [
        str(esbuild),
        "snippet.mjs",
        "--bundle",
        "--format=iife",
        "--log-level=warning",
        "--outfile=site/snippet.js",
    ]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    (root / "index.html").write_text(
        '<!doctype html><link rel="icon" href="data:,"><script src="/snippet.js"></script>'
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_browser_snippet_works_as_pasted(shared_server, chromium, site):
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    try:
        page.goto(f"{site}/")
        stored = lambda: stored_names(shared_server, "browser-site")  # noqa: E731
        wait_until(lambda: len(stored()) >= 2, timeout=20, what="the snippet's events stored")
    finally:
        context.close()
    assert sorted(stored()) == ["page", "track Signed Up"]
    assert errors == []
