"""A new user's whole journey through the web app, in Debian's Chromium: from the login page
to a source, its live debugger, a Webhook switched on and off, and a replay of history.

Every step goes through the pages (forms, switches, buttons), never through the API or the
CLI, so this is what a marketer who never opens a terminal can do. The pages are
photographed on the way for README.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.admin.conftest import (
    DESKTOP,
    PHONE,
    ConsoleErrors,
    admin_token,
    api,
    log_in,
    shoot,
    unlabelled_controls,
)
from tests.conftest import Server
from tests.fakes import Captured, FakeVendor

SECRET = "whsec-journey-7f3a9c1e5b"


def delivered_ids(vendor: FakeVendor) -> list[str]:
    """messageIds the sink received from the destination (the catalog's test event aside)."""
    ids = []
    for request in vendor.received():
        body = request.json()
        for event in body if isinstance(body, list) else [body]:
            if not event["messageId"].startswith("trackyard-test-"):
                ids.append(event["messageId"])
    return ids


def send_batch(server: Server, write_key: str, events: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{server.url}/v1/batch", auth=(write_key, ""), json={"batch": events}, timeout=10)
    assert response.status_code == 200, response.text


def tracks(count: int, name: str) -> list[dict[str, Any]]:
    prefix = uuid.uuid4().hex[:8]
    return [
        {"type": "track", "userId": "user-1", "event": name, "messageId": f"{prefix}-{i}"}
        for i in range(count)
    ]


def is_signed(request: Captured) -> bool:
    return bool(request.headers.get("x-signature"))


def test_a_new_user_connects_a_source_switches_on_a_webhook_watches_events_and_replays_history(
    make_server, chromium
):
    server = make_server().start()
    token = admin_token(server)
    context = chromium.new_context(viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    console = ConsoleErrors(page)
    try:
        with FakeVendor() as sink:
            _journey(page, server, token, sink)
        page.set_viewport_size(PHONE)
        page.goto(f"{server.url}/")
        shoot(page, "overview-phone")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], (
            "the page scrolls sideways"
        )
    finally:
        context.close()
    # The only error statuses are the ones provoked on purpose: a save with a missing URL (400).
    assert console.unexpected(400) == []


def _journey(page: Any, server: Server, token: str, sink: FakeVendor) -> None:
    # Log in with the admin token.
    page.goto(f"{server.url}/login")
    shoot(page, "login", full_page=False)
    log_in(page, server, token)

    # Create a source.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sources").click()
    page.get_by_label("Name").fill("shop")
    page.get_by_role("button", name="Create source").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("shop")
    write_key = page.locator("#write-key").inner_text()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", write_key)

    # Copy its Python snippet (the tabs work from the keyboard); the debugger is live.
    page.get_by_role("tab", name="Browser").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Python")).to_have_attribute("aria-selected", "true")
    page.get_by_role("button", name="Copy Python snippet").click()
    snippet = page.evaluate("navigator.clipboard.readText()")
    assert f"host='{server.url}'" in snippet and write_key in snippet
    expect(page.locator("[data-live-state]")).to_have_text("Live")

    # Events sent with segment-analytics-python, by the snippet exactly as copied, appear within 2 s.
    subprocess.run([sys.executable, "-c", snippet], check=True, timeout=60, capture_output=True)
    rows = page.locator("#debugger > li")
    expect(rows).to_have_count(2, timeout=2_000)
    expect(rows.nth(0)).to_contain_text("Signed Up")
    expect(rows.nth(1)).to_contain_text("identify")

    # An event that fails on ingest shows with its reason; an event expands to its full JSON.
    send_batch(server, write_key, [{"type": "track", "event": "No Identity"}])
    expect(rows.first).to_contain_text("track requires 'userId' or 'anonymousId'")
    rows.nth(1).locator("summary").click()
    expect(rows.nth(1).locator("pre")).to_contain_text('"event": "Signed Up"')
    expect(rows.nth(1).locator("pre")).to_contain_text('"messageId"')
    shoot(page, "source")
    with api(server, token) as client:
        snippet_ids = [event["event"]["messageId"] for event in client.get("/sources/shop/events").json()]
    assert len(snippet_ids) == 2

    # Add a Webhook from the catalog, through its form.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Catalog").click()
    shoot(page, "catalog")
    page.get_by_label("Search destinations").fill("webhook")
    expect(page.locator("[data-search]:visible")).to_have_count(1)
    page.get_by_role("link", name=re.compile("Webhooks")).click()
    expect(page.get_by_label("Batch size")).to_have_value("1")  # defaults are filled in
    expect(page.get_by_label("Shared secret")).to_have_attribute("type", "password")
    page.get_by_role("textbox", name="Name", exact=True).fill("sink")
    page.get_by_label("Source").select_option("shop")
    page.get_by_label("Shared secret").fill(SECRET)

    # Saving without the URL says which field is missing and why.
    page.get_by_role("button", name="Save destination").click()
    expect(page.get_by_role("alert")).to_contain_text("setting 'url' (Webhook URL) is required")
    expect(page.get_by_label("Webhook URL")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Webhook URL").fill(f"{sink.url}/hook")
    page.get_by_label("Shared secret").fill(SECRET)
    page.get_by_role("button", name="Send test event").click()
    expect(page.locator("output.test-result")).to_contain_text("Delivered")
    test_event = sink.wait_for(lambda requests: len(requests) == 1)[0]
    assert test_event.json()["event"] == "Test Event Sent" and is_signed(test_event)
    assert SECRET not in page.content()
    shoot(page, "destination-new")
    page.get_by_role("button", name="Save destination").click()

    # It was saved switched off: nothing is delivered until it is flipped on.
    switch = page.get_by_role("switch", name="Send events to sink")
    expect(switch).not_to_be_checked()
    switch.focus()
    page.keyboard.press("Space")  # the switch works from the keyboard
    expect(switch).to_be_checked()
    expect(page.locator("[data-switch-text]")).to_have_text("On")

    live = tracks(3, "Order Completed")
    send_batch(server, write_key, live)
    sink.wait_for(lambda _: set(delivered_ids(sink)) == {e["messageId"] for e in live})
    assert all(is_signed(request) for request in sink.received())
    expect(page.locator('[data-stat="delivered"]')).to_have_text("3", timeout=10_000)
    page.reload()
    expect(page.locator(".attempt .badge", has_text="Delivered")).to_have_count(3)
    shoot(page, "destination")

    # Flipped off, events stop.
    switch = page.get_by_role("switch", name="Send events to sink")
    switch.uncheck()
    expect(page.locator("[data-switch-text]")).to_have_text("Off")
    time.sleep(2.0)  # the delivery engine re-reads the switches every second
    before = len(sink.received())
    send_batch(server, write_key, tracks(2, "While Off"))
    time.sleep(2.5)
    assert len(sink.received()) == before, "a destination switched off still received events"

    # Replay the last hour: the snippet's events (sent before the destination existed) and
    # the ones delivered live, up to where live delivery stopped.
    replayed = [*snippet_ids, *(e["messageId"] for e in live)]
    page.get_by_role("button", name="Count events").click()
    expect(page.locator("[data-replay-count]")).to_contain_text(f"{len(replayed)} events will be sent")
    page.get_by_role("button", name="Start replay").click()
    expect(page.locator(".flash")).to_contain_text("Replay 1 started")
    progress = page.locator('[data-replay-id="1"] [data-replay-field="percent"]')
    expect(progress).to_have_text("100%", timeout=20_000)
    expect(page.locator('[data-replay-id="1"] [data-replay-field="state"]')).to_have_text("done")
    sink.wait_for(
        lambda _: sorted(delivered_ids(sink)) == sorted([*replayed, *(e["messageId"] for e in live)])
    )
    shoot(page, "destination-replay")

    # The built-in warehouse: "Sync now" loads everything stored so far.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Warehouses").click()
    page.get_by_role("button", name="Sync default now").click()
    expect(page.locator(".flash")).to_contain_text("up to date with the log")
    expect(page.locator(".warehouse .badge")).to_have_text("Up to date")
    shoot(page, "warehouses")

    for path, name in (("/", "overview"), ("/destinations", "destinations"), ("/sources", "sources")):
        page.goto(f"{server.url}{path}")
        shoot(page, name)
    pages = (
        "/",
        "/sources",
        "/sources/shop",
        "/catalog",
        "/catalog/webhook",
        "/destinations",
        "/destinations/sink",
        "/docs",
    )
    for path in pages:
        page.goto(f"{server.url}{path}")
        assert unlabelled_controls(page) == [], f"{path} has controls without a label"
