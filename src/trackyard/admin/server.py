"""The admin ASGI app: everything a `trackyard serve` process answers outside `/v1/`.

The web app's pages, the JSON API under `/api/v1`, its OpenAPI document, static files,
and the operational endpoints `/health` and `/metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from trackyard.admin import api, openapi
from trackyard.admin.context import AdminContext
from trackyard.admin.web import STATIC, Pages
from trackyard.config import Config
from trackyard.ingest.http import Receive, Scope, Send
from trackyard.store import Store

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the headers that keep pages from being framed, sniffed or fed foreign scripts."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def health(request: Request) -> Response:
    return Response(orjson.dumps({"status": "ok"}), media_type="application/json")


def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def openapi_json(document: bytes) -> Callable[[Request], Response]:
    def serve(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return serve


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: JSON for the API, a small page for people."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = exc.headers if isinstance(exc, HTTPException) else None
    message = "no such page" if status == 404 else f"{request.method} is not allowed here"
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return api.error_response(status, "not_found" if status == 404 else "method_not_allowed", message)
    body = f'<!doctype html><title>{status}</title><p>{message}. <a href="/">Back to trackyard</a></p>'
    return HTMLResponse(body, status, headers)


def build_admin_app(store: Store, config: Config, sources_changed: Callable[[], None]) -> Any:
    """`sources_changed` refreshes the collection API's write-key cache after a source changes."""
    admin = AdminContext(store, config, sources_changed)
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/openapi.json", openapi_json(orjson.dumps(openapi.document())), methods=["GET"]),
        *api.routes(admin),
        *Pages(admin).routes(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: http_error, 405: http_error})
    return SecurityHeaders(app)
