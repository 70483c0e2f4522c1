"""The catalog covers every category of the seed, each with at least one installed tool,
and the catalog page shows them."""

from __future__ import annotations

from tests.admin.conftest import admin_token, api, browser_session

SEED_CATEGORIES = {
    "analytics",
    "advertising",
    "email",
    "customer support",
    "marketing automation",
    "crm",
    "storage",
}


def test_every_seed_category_has_a_destination_in_the_api_and_on_the_catalog_page(shared_server):
    with api(shared_server) as client:
        entries = client.get("/catalog").json()
    by_category: dict[str, list[str]] = {}
    for entry in entries:
        by_category.setdefault(entry["category"], []).append(entry["name"])
    assert set(by_category) >= SEED_CATEGORIES, sorted(by_category)
    assert len(entries) >= 22  # the ten of the first catalog and the twelve of catalog II
    with browser_session(shared_server, admin_token(shared_server)) as (page, _):
        html = page.get("/catalog").text
    for category in SEED_CATEGORIES:
        assert category.lower() in html.lower(), f"the catalog page does not show {category}"
    for names in by_category.values():
        assert any(name in html for name in names)
