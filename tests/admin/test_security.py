"""Who may use the admin: only the admin token, never a write key; sessions are HttpOnly,
SameSite, Secure over https and end when the token rotates; forms need their CSRF token;
secrets never come back out of any page or API response."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.admin.conftest import FAST_RETRIES, admin_token, api, browser_session, csrf_of, wait_until
from tests.conftest import Server
from tests.fakes import Captured, FakeVendor
from trackyard.admin.context import AdminContext
from trackyard.admin.web import Pages
from trackyard.config import Config

PUBLIC = {"/login", "/docs"}  # pages anyone may read; /health, /metrics, /api/openapi.json and /static too
WEBHOOK_SECRET = "whsec-9d8c7b6a5f4e3d2c"
AMPLITUDE_KEY = "amp-key-1a2b3c4d5e6f7a8b"
PATH_VALUES = {"name": "default", "type": "webhook", "id": "1"}


def fill(path: str) -> str:
    return re.sub(r"{(\w+)(?::\w+)?}", lambda match: PATH_VALUES[match.group(1)], path)


def api_operations(server: Server) -> list[tuple[str, str]]:
    document = httpx.get(f"{server.url}/api/openapi.json", timeout=10).json()
    return [(method.upper(), fill(path)) for path, item in document["paths"].items() for method in item]


def page_routes(tmp_path: Path) -> list[tuple[str, str]]:
    """Every route of the web app, read from the app itself (a new page cannot be forgotten)."""
    store = Config(data_dir=tmp_path).open_store()
    try:
        routes = Pages(AdminContext(store, Config(data_dir=tmp_path))).routes()
    finally:
        store.close()
    return [(method, fill(route.path)) for route in routes for method in sorted(route.methods - {"HEAD"})]


def request(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    body = {} if method in ("POST", "PATCH", "PUT") else None
    return client.request(method, url, json=body, timeout=10, **kwargs)


def basic(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def test_every_api_endpoint_refuses_no_token_a_wrong_one_and_a_write_key(server):
    write_key = server.write_key
    refused_with = {
        "no credential": {},
        "a wrong token": {"Authorization": "Bearer tya_not-the-token"},
        "the write key as a bearer token": {"Authorization": f"Bearer {write_key}"},
        "the write key as Basic auth": {"Authorization": basic(write_key)},
    }
    operations = api_operations(server)
    assert len(operations) >= 25
    with httpx.Client(base_url=server.url) as client:
        for method, path in operations:
            for what, headers in refused_with.items():
                response = request(client, method, path, headers=headers)
                assert response.status_code == 401, f"{method} {path} with {what}: {response.status_code}"
                assert response.json()["code"] in ("missing_token", "invalid_token")
                assert response.headers["www-authenticate"].startswith("Bearer")
    # nothing those requests asked for happened
    with api(server) as client:
        assert [source["name"] for source in client.get("/sources").json()] == ["default"]
        assert client.get("/sources/default").json()["write_key"] == write_key


def test_every_page_refuses_no_session_a_forged_one_and_the_bearer_token(server, tmp_path):
    token = admin_token(server)
    routes = page_routes(tmp_path)
    assert {path for _, path in routes} >= {"/", "/sources", "/catalog", "/destinations", "/sources/default"}
    forged = "eyJjc3JmIjoieCIsInRva2VuIjoieCIsImV4cGlyZXNfbXMiOjk5OTk5OTk5OTk5OTk5fQ.c2lnbmF0dXJl"
    for method, path in routes:
        if path in PUBLIC:
            continue
        for cookies, headers in (
            ({}, {}),
            ({"trackyard_session": forged}, {}),
            ({}, {"Authorization": f"Bearer {token}"}),
        ):
            with httpx.Client(base_url=server.url, cookies=cookies) as client:
                response = client.request(method, path, headers=headers, data={"csrf_token": "x"})
            assert response.status_code == 401, f"{method} {path}: {response.status_code}"
            assert 'action="/login"' in response.text  # a person is shown the login form
    with api(server) as client:
        assert [source["name"] for source in client.get("/sources").json()] == ["default"]


def test_only_the_login_page_the_references_health_metrics_and_static_files_are_public(server):
    credentials = (server.write_key, admin_token(server))
    with httpx.Client(base_url=server.url) as client:
        for path in (*sorted(PUBLIC), "/health", "/metrics", "/api/openapi.json", "/static/app.css"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert not any(credential in response.text for credential in credentials), path
        assert client.get("/health").json() == {"status": "ok"}
        assert "python_info" in client.get("/metrics").text
        assert client.get("/").headers["content-security-policy"].startswith("default-src 'self'")


def test_form_posts_and_session_api_calls_without_the_csrf_token_are_refused(server, tmp_path):
    with browser_session(server, admin_token(server)) as (client, csrf):
        for method, path in page_routes(tmp_path):
            if method != "POST" or path == "/login":
                continue
            for data in ({}, {"csrf_token": "forged"}):
                response = client.post(path, data={**data, "name": "evil", "enabled": "true"})
                assert response.status_code == 403, f"POST {path} with {data}: {response.status_code}"
        assert client.get("/sources").text.count("evil") == 0

        refused = client.post("/api/v1/sources", json={"name": "evil"})
        assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
        accepted = client.post("/api/v1/sources", json={"name": "good"}, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 201, accepted.text
        created = client.post("/sources", data={"name": "also-good", "csrf_token": csrf})
        assert created.status_code == 303 and created.headers["location"] == "/sources/also-good"

    with httpx.Client(base_url=server.url) as anonymous:
        anonymous.get("/login")
        assert anonymous.post("/login", data={"token": admin_token(server)}).status_code == 403


def session_cookie(server: Server, token: str) -> str:
    """The Set-Cookie header of a successful login through the form."""
    with httpx.Client(base_url=server.url) as client:
        login = client.get("/login")
        response = client.post(
            "/login", data={"token": token, "csrf_token": csrf_of(login.text), "next": "/"}
        )
    assert response.status_code == 303
    return response.headers["set-cookie"].lower()


def test_the_session_cookie_is_http_only_same_site_strict_and_secure_over_https(make_server):
    server = make_server(TRACKYARD_PUBLIC_URL="https://cdp.example.test").start()
    with httpx.Client(base_url=server.url) as client:
        login = client.get("/login")
        cookie = login.headers["set-cookie"].lower()
        assert cookie.startswith("trackyard_session=")
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert "; secure" in cookie
        # the client keeps a Secure cookie off plain http, so the form's session never comes back
        posted = client.post("/login", data={"token": admin_token(server), "csrf_token": csrf_of(login.text)})
        assert posted.status_code == 403


def test_a_wrong_token_is_refused_and_rotating_the_token_ends_every_session(server):
    token = admin_token(server)
    cookie = session_cookie(server, token)
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "; secure" not in cookie  # plain http on 127.0.0.1: a Secure cookie would never come back
    with httpx.Client(base_url=server.url) as client:
        login = client.get("/login")
        wrong = client.post("/login", data={"token": "tya_guess", "csrf_token": csrf_of(login.text)})
        assert wrong.status_code == 401 and "not the admin token" in wrong.text
    with browser_session(server, token) as (client, _):
        assert client.get("/").status_code == 200
        rotated = server.cli("admin", "token", "--rotate").stdout.strip().splitlines()[-1]
        assert client.get("/").status_code == 401
        assert client.get("/api/v1/sources").status_code == 401
    with api(server, rotated) as fresh:
        assert fresh.get("/sources").status_code == 200


def echo_refusal(request: Captured) -> tuple[int, dict[str, str], bytes]:
    """A tool that refuses everything and quotes the request back, headers included."""
    quoted = "\n".join(f"{k}: {v}" for k, v in request.headers.items()).encode() + b"\n" + request.body
    return 400, {"Content-Type": "text/plain"}, b"rejected: " + quoted


@pytest.fixture
def server_with_secrets(make_server) -> Any:
    """Two destinations whose secrets travel in the requests and come back in the answers."""
    server = make_server(**FAST_RETRIES).start()
    with FakeVendor(echo_refusal) as vendor, api(server) as client:
        settings = {
            "webhook": {"url": f"{vendor.url}/hook", "shared_secret": WEBHOOK_SECRET},
            "amplitude": {"api_key": AMPLITUDE_KEY, "base_url": vendor.url},
        }
        for type_, values in settings.items():
            created = client.post(
                "/destinations", json={"name": type_, "source": "default", "type": type_, "settings": values}
            )
            assert created.status_code == 201, created.text
        sent = httpx.post(
            f"{server.url}/v1/track",
            auth=(server.write_key, ""),
            json={"userId": "u1", "event": "Leak Probe"},
            timeout=10,
        )
        assert sent.status_code == 200
        wait_until(
            lambda: all(client.get(f"/destinations/{t}/status").json()["dead_letters"] for t in settings),
            what="dead letters",
        )
        wait_until(  # attempts reach the store with the recorder's next flush (once a second)
            lambda: all(client.get(f"/destinations/{t}/attempts").json() for t in settings),
            what="recorded attempts",
        )
        test_event = client.post("/catalog/webhook/test", json={"destination": "webhook"})
        assert test_event.status_code == 200, test_event.text
        assert test_event.json()["verdict"] == "give_up"
        assert "[redacted]" in test_event.text
        yield server, vendor, test_event.text


def test_secrets_never_appear_in_any_page_or_api_response(server_with_secrets, tmp_path):
    server, vendor, test_event = server_with_secrets
    secrets = (WEBHOOK_SECRET, AMPLITUDE_KEY)
    assert any(AMPLITUDE_KEY.encode() in request.body for request in vendor.received()), "the key never left"
    bodies = {"POST /api/v1/catalog/webhook/test": test_event}
    with api(server) as client:
        for method, path in api_operations(server):
            if method != "GET" or path.endswith("/live"):
                continue
            for name in ("webhook", "amplitude"):
                url = path.replace("/destinations/default", f"/destinations/{name}").removeprefix("/api/v1")
                bodies[f"GET {url}"] = client.get(url, params={"destination": name}).text
        preview = client.post("/destinations/amplitude/replays/preview", json={})
        bodies["POST replay preview"] = preview.text
    with browser_session(server, admin_token(server)) as (page_client, _):
        for method, path in page_routes(tmp_path):
            if method == "GET":
                for name in ("webhook", "amplitude"):
                    url = path.replace("/destinations/default", f"/destinations/{name}")
                    bodies[f"page {url}"] = page_client.get(url).text
    assert len(bodies) >= 30
    assert "rejected: " in bodies["GET /destinations/amplitude/attempts"]  # the echo was kept, scrubbed
    for where, body in bodies.items():
        for secret in secrets:
            assert secret not in body, f"{where} shows a secret"
