"""A destination whose tool refuses events: the page shows each failure with the tool's
answer, and "Retry all" re-sends the dead letters once the tool accepts them again."""

from __future__ import annotations

import threading
import uuid

import httpx
from playwright.sync_api import expect

from tests.admin.conftest import DESKTOP, FAST_RETRIES, ConsoleErrors, admin_token, api, log_in, shoot
from tests.fakes import Captured, FakeVendor, ok_json

REFUSAL = b'{"error":"property plan is not allowed in this workspace"}'


class Recovering:
    """A tool that answers 400 until it is told it has recovered."""

    def __init__(self) -> None:
        self.recovered = threading.Event()

    def __call__(self, request: Captured) -> tuple[int, dict[str, str], bytes]:
        if self.recovered.is_set():
            return ok_json({"ok": True})
        return 400, {"Content-Type": "application/json"}, REFUSAL


def test_failures_show_the_response_and_retry_all_resends_them_once_the_tool_recovers(make_server, chromium):
    server = make_server(**FAST_RETRIES).start()
    token = admin_token(server)
    tool = Recovering()
    with FakeVendor(tool) as vendor, api(server, token) as client:
        created = client.post(
            "/destinations",
            json={
                "name": "crm",
                "source": "default",
                "type": "webhook",
                "settings": {"url": f"{vendor.url}/in"},
            },
        )
        assert created.status_code == 201, created.text
        events = [
            {"type": "track", "userId": "u1", "event": "Plan Chosen", "messageId": f"{uuid.uuid4()}"}
            for _ in range(3)
        ]
        sent = httpx.post(
            f"{server.url}/v1/batch", auth=(server.write_key, ""), json={"batch": events}, timeout=10
        )
        assert sent.status_code == 200
        vendor.wait_for(lambda requests: len(requests) >= 3)

        context = chromium.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.set_default_timeout(15_000)
        console = ConsoleErrors(page)
        try:
            log_in(page, server, token)
            page.goto(f"{server.url}/destinations/crm")
            expect(page.locator('[data-stat="dead_letters"]')).to_have_text("3", timeout=10_000)
            expect(page.locator('[data-stat="failed"]')).to_have_text("3")
            page.reload()
            dead = page.locator("#dead-letters .attempt")
            expect(dead).to_have_count(3)
            expect(dead.first).to_contain_text("HTTP 400")
            dead.first.locator("summary").click()
            expect(dead.first.locator("pre").nth(1)).to_contain_text("property plan is not allowed")
            expect(dead.first.locator("pre").nth(0)).to_contain_text(f"POST {vendor.url}/in")
            failed_attempt = page.locator(".attempt.verdict-give_up").first
            failed_attempt.locator("summary").click()
            expect(failed_attempt).to_contain_text("property plan is not allowed")
            overview = page.context.new_page()
            overview.goto(f"{server.url}/")
            expect(overview.locator("#health-table")).to_contain_text("Failing")
            overview.close()
            shoot(page, "destination-failing")

            tool.recovered.set()
            page.get_by_role("button", name="Retry all (3)").click()
            expect(page.locator(".flash")).to_contain_text("3 dead letters queued")
            resent = vendor.wait_for(lambda requests: len(requests) >= 6)
            assert sorted(r.json()["messageId"] for r in resent[3:]) == sorted(e["messageId"] for e in events)
            expect(page.locator('[data-stat="dead_letters"]')).to_have_text("0", timeout=10_000)
            expect(page.locator('[data-stat="delivered"]')).to_have_text("3", timeout=10_000)
            assert len(vendor.received()) == 6, "a dead letter was re-sent more than once"
        finally:
            context.close()
        assert console.unexpected() == []
