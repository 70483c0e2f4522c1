"""What the web app's tests share: Debian's Chromium through Playwright, logging in, the
admin API with the token, console errors, and screenshots for docs/screenshots/."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, Server, missing_service, server_env

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
SCREENSHOTS = REPO / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
FAST_RETRIES = {"TRACKYARD_RETRY_BACKOFF_BASE_S": "0.05", "TRACKYARD_RETRY_BACKOFF_CAP_S": "0.5"}


def admin_token(server: Server) -> str:
    """`trackyard admin token` prints the token alone on its last line."""
    return server.cli("admin", "token").stdout.strip().splitlines()[-1]


def api(server: Server, token: str | None = None) -> httpx.Client:
    """An admin API client with the bearer token (the server's own when not given)."""
    headers = {"Authorization": f"Bearer {token or admin_token(server)}"}
    return httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=15)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


@contextmanager
def browser_session(server: Server, token: str) -> Iterator[tuple[httpx.Client, str]]:
    """An httpx client logged in through the login form, as a browser would (its session
    cookie set), and the session's CSRF token."""
    with httpx.Client(base_url=server.url, timeout=15, follow_redirects=False) as client:
        login = client.get("/login")
        response = client.post(
            "/login", data={"token": token, "csrf_token": csrf_of(login.text), "next": "/"}
        )
        assert response.status_code == 303, response.text
        yield client, csrf_of(client.get("/").text)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s")


class ConsoleErrors:
    """Console errors and uncaught exceptions of a page. Chromium also logs every document
    answered with an error status; a test names the ones it provokes on purpose."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def unexpected(self, *expected_statuses: int) -> list[str]:
        allowed = tuple(f"the server responded with a status of {status}" for status in expected_statuses)
        return [error for error in self.errors if not any(text in error for text in allowed)]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a module whose tests each work on sources and destinations of their own."""
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    data_dir.mkdir()
    server = Server(data_dir, server_env(data_dir)).start()
    yield server
    server.stop()


def new_source(server: Server, name: str) -> str:
    """Create a source through the API; returns its write key."""
    with api(server) as client:
        created = client.post("/sources", json={"name": name})
    assert created.status_code == 201, created.text
    return str(created.json()["write_key"])


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


def shoot(page: Any, name: str, full_page: bool = True) -> None:
    """A screenshot for README.md's web app section."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header belongs at the top of a full page
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page, animations="disabled")


UNLABELLED_CONTROLS = """
() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href], [role=tab]')]
  .filter((control) => {
    const named = control.labels?.length || control.getAttribute('aria-label') || control.getAttribute('aria-labelledby')
    const text = control.textContent.trim() || control.querySelector('img[alt]:not([alt=""])')
    return !(named || (control.matches('button, a, [role=tab]') && text))
  })
  .map((control) => control.outerHTML.slice(0, 120))
"""


def unlabelled_controls(page: Any) -> list[str]:
    """Form controls, buttons and links of the page that have no accessible name."""
    return page.evaluate(UNLABELLED_CONTROLS)


def log_in(page: Any, server: Server, token: str) -> None:
    page.goto(f"{server.url}/login")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")
