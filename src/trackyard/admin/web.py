"""The web app's pages: server-rendered templates over the service layer, plain HTML forms
(each with its CSRF token) that work without JavaScript, and small scripts that make them
live (charts, the debugger, the on/off switch)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import orjson
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from trackyard import __version__
from trackyard.admin import forms, live, service
from trackyard.admin.api import OPERATIONS
from trackyard.admin.auth import (
    CSRF_FIELD,
    SESSION_COOKIE,
    AuthError,
    Session,
    check_csrf,
    is_admin_token,
    logged_in,
    set_session_cookie,
)
from trackyard.admin.context import AdminContext
from trackyard.admin.snippets import snippets
from trackyard.archive.service import ReplayRequest
from trackyard.destinations.base import Category
from trackyard.ingest.http import ROUTES
from trackyard.spec import format_ms, now_ms
from trackyard.store import SourceExists, SourceNotFound
from trackyard.store.archive import ReplayNotFound
from trackyard.store.delivery import DestinationExists, DestinationNotFound
from trackyard.warehouse.errors import WarehouseError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
CATEGORY_ORDER = [str(category) for category in Category]
ATTEMPTS_SHOWN = 25
DEAD_LETTERS_SHOWN = 50
REPLAYS_SHOWN = 10


@cache
def static_url(name: str) -> str:
    """The URL of a static file, with its content hash so browsers never keep a stale copy."""
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]
    return f"/static/{name}?v={digest}"


def _json_script(value: Any) -> str:
    """JSON safe to put inside <script type="application/json">."""
    return orjson.dumps(value).decode().replace("<", "\\u003c")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(static=static_url, version=__version__, csrf_field=CSRF_FIELD)
    env.filters["segment"] = lambda value: quote(str(value), safe="")
    env.filters["json_script"] = _json_script
    return env


def _matches(entry: dict[str, Any], query: str) -> bool:
    text = " ".join((entry["name"], entry["slug"], entry["category"], entry["description"])).lower()
    return all(word in text for word in query.lower().split())


def _minute_input(ms: int) -> str:
    """A UTC instant as a datetime-local input's value (YYYY-MM-DDTHH:MM)."""
    return format_ms(ms)[:16]


def _return_path(request: Request) -> str:
    """Where to go back to after logging in: the page asked for (a form's target cannot be
    revisited with GET, so after a refused post, the overview)."""
    if request.method != "GET":
        return "/"
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def safe_next(target: str | None) -> str:
    """A same-site path to go to after logging in; anything else goes home."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@dataclass
class View:
    """One authenticated page request: what handlers render and redirect with."""

    pages: Pages
    request: Request
    session: Session
    form: FormData = field(default_factory=FormData)  # empty for GET

    @property
    def store(self) -> Any:
        return self.pages.admin.store

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def field(self, name: str) -> str:
        value = self.form.get(name)
        return value.strip() if isinstance(value, str) else ""

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        response = self.pages.html(template, status, self.session, logged_in=True, **context)
        if self.session.flash:
            self.pages.keep(response, self.request, self.session.with_flash(""))
        return response

    def redirect(self, url: str, flash: str = "", kind: str = "ok") -> Response:
        response = RedirectResponse(url, status_code=303)
        if flash:
            self.pages.keep(response, self.request, self.session.with_flash(flash, kind))
        return response

    def not_found(self, message: str) -> Response:
        return self.render("error.html", 404, title="Not found", message=message)


Handler = Callable[[View], Response]


class Pages:
    def __init__(self, admin: AdminContext) -> None:
        self.admin = admin
        self.env = environment()

    # -- rendering and sessions -------------------------------------------------------------
    def html(
        self, template: str, status: int, session: Session, *, logged_in: bool, **context: Any
    ) -> Response:
        context.setdefault("nav", "")
        body = self.env.get_template(template).render(
            csrf=session.csrf,
            flash=session.flash,
            flash_kind=session.flash_kind,
            logged_in=logged_in,
            **context,
        )
        return HTMLResponse(body, status, headers={"Cache-Control": "no-store"})

    def keep(self, response: Response, request: Request, session: Session) -> None:
        set_session_cookie(response, self.admin.codec, session, self.admin.secure_cookies(request))

    def session_of(self, request: Request) -> Session | None:
        return self.admin.codec.decode(request.cookies.get(SESSION_COOKIE))

    def login_page(self, request: Request, status: int, target: str, error: str = "") -> Response:
        """The login form, with a fresh anonymous session to hold its CSRF token."""
        session = Session()
        response = self.html("login.html", status, session, logged_in=False, next=target, error=error)
        self.keep(response, request, session)
        return response

    # -- the guard every page goes through -------------------------------------------------
    def page(self, handler: Handler) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            session = self.session_of(request)
            if session is None or not await asyncio.to_thread(logged_in, self.admin.store, session):
                return self.login_page(request, 401, _return_path(request))
            view = View(self, request, session)
            if request.method == "POST":
                try:
                    view.form = await request.form()
                    check_csrf(session, view.field(CSRF_FIELD))
                except AuthError as exc:
                    return view.render("error.html", 403, title="Refused", message=exc.message)
                except MultiPartException as exc:
                    return view.render("error.html", 400, title="Bad form", message=str(exc))
            try:
                return await asyncio.to_thread(handler, view)
            except (SourceNotFound, DestinationNotFound, ReplayNotFound, service.WarehouseNotFound) as exc:
                return view.not_found(str(exc))

        handle.__name__ = handler.__name__
        return handle

    # -- login -----------------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is not None and await asyncio.to_thread(logged_in, self.admin.store, session):
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        return self.login_page(request, 200, safe_next(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        session = self.session_of(request)
        form = await request.form()
        token, target = form.get("token"), safe_next(str(form.get("next") or "/"))
        try:
            if session is None:
                raise AuthError(403, "csrf_failed", "your session expired: try again")
            check_csrf(session, str(form.get(CSRF_FIELD) or ""))
        except AuthError as exc:
            return self.login_page(request, 403, target, exc.message)
        if not isinstance(token, str) or not await asyncio.to_thread(
            is_admin_token, self.admin.store, token.strip()
        ):
            message = "That is not the admin token. Print it with `trackyard admin token`."
            return self.login_page(request, 401, target, message)
        fingerprint = service.token_fingerprint(token.strip())
        response = RedirectResponse(target, status_code=303)
        self.keep(response, request, Session(token=fingerprint))
        return response

    def logout(self, view: View) -> Response:
        response = RedirectResponse("/login", status_code=303)
        self.keep(response, view.request, Session())
        return response

    # -- overview ------------------------------------------------------------------------------
    def overview(self, view: View) -> Response:
        return view.render(
            "overview.html",
            nav="overview",
            sources=service.list_sources(view.store),
            destinations=service.destination_health(view.store),
            warehouses=service.warehouses(view.store, self.admin.builtin_warehouse),
            series=live.received_series(view.store, self.admin.received, 24),
        )

    # -- sources ---------------------------------------------------------------------------------
    def sources(self, view: View, status: int = 200, error: str = "", typed: str = "") -> Response:
        series = live.received_series(view.store, self.admin.received, 24)
        return view.render(
            "sources.html",
            status,
            nav="sources",
            sources=service.list_sources(view.store),
            totals={source["name"]: source["total"] for source in series["sources"]},
            error=error,
            typed=typed,
        )

    def create_source(self, view: View) -> Response:
        name = view.field("name")
        try:
            source = service.create_source(view.store, name)
        except (service.ServiceError, SourceExists) as exc:
            return self.sources(view, 400, str(exc), name)
        self.admin.sources_changed()
        flash = f"Source {source.name} created. Install one of the snippets below, then watch the debugger."
        return view.redirect(f"/sources/{quote(source.name, safe='')}", flash)

    def source(self, view: View) -> Response:
        source = service.get_source(view.store, view.param("name"))
        attached = [d for d in service.list_destinations(view.store) if d["source"] == source.name]
        return view.render(
            "source.html",
            nav="sources",
            source=service.source_view(source),
            snippets=snippets(self.admin.public_url(view.request), source.write_key),
            destinations=attached,
        )

    def rotate_write_key(self, view: View) -> Response:
        source = service.rotate_write_key(view.store, view.param("name"))
        self.admin.sources_changed()
        flash = "New write key in place. SDKs still using the old one now get 401: update them."
        return view.redirect(f"/sources/{quote(source.name, safe='')}", flash)

    def delete_source(self, view: View) -> Response:
        name = view.param("name")
        try:
            service.delete_source(view.store, name)
        except service.ServiceError as exc:
            return view.redirect(f"/sources/{quote(name, safe='')}", str(exc), "error")
        self.admin.sources_changed()
        return view.redirect("/sources", f"Source {name} deleted; its events stay in the log.")

    # -- destinations ----------------------------------------------------------------------------
    def destinations(self, view: View) -> Response:
        return view.render(
            "destinations.html", nav="destinations", destinations=service.destination_health(view.store)
        )

    def catalog(self, view: View) -> Response:
        query = view.request.query_params.get("q", "").strip()
        entries = [entry for entry in service.catalog() if _matches(entry, query)]
        categories = [
            (category, [entry for entry in entries if entry["category"] == category])
            for category in CATEGORY_ORDER
        ]
        return view.render(
            "catalog.html",
            nav="catalog",
            categories=[(category, found) for category, found in categories if found],
            query=query,
            total=len(entries),
        )

    def _entry(self, slug: str) -> dict[str, Any] | None:
        return next((entry for entry in service.catalog() if entry["slug"] == slug), None)

    def new_destination(
        self,
        view: View,
        status: int = 200,
        values: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        message: str = "",
    ) -> Response:
        entry = self._entry(view.param("type"))
        if entry is None:
            return view.not_found(f"no destination type {view.param('type')!r} is installed")
        sources = service.list_sources(view.store)
        typed = values or {}
        return view.render(
            "destination_new.html",
            status,
            nav="catalog",
            entry=entry,
            sources=sources,
            fields=forms.settings_fields(entry["settings"], typed.get("settings", {}), errors or {}),
            name=typed.get("name", ""),
            chosen_source=typed.get("source") or (sources[0]["name"] if sources else ""),
            enabled=typed.get("enabled", False),
            errors=errors or {},
            message=message,
        )

    def create_destination(self, view: View) -> Response:
        entry = self._entry(view.param("type"))
        if entry is None:
            return view.not_found(f"no destination type {view.param('type')!r} is installed")
        name, source = view.field("name"), view.field("source")
        enabled = view.form.getlist("enabled")[-1:] == ["true"]
        try:
            service.add_destination(
                view.store,
                source,
                entry["slug"],
                name,
                forms.settings_from_form(view.form, entry["settings"]),
                None,
                enabled,
            )
        except (service.ServiceError, DestinationExists, SourceNotFound) as exc:
            field = getattr(exc, "field", None) or ("source" if isinstance(exc, SourceNotFound) else "name")
            typed = {
                "name": name,
                "source": source,
                "enabled": enabled,
                "settings": forms.typed_settings(view.form, entry["settings"]),
            }
            return self.new_destination(view, 400, typed, {field: str(exc)}, str(exc))
        state = "on: events arriving from now on are delivered" if enabled else "off: switch it on to deliver"
        return view.redirect(
            f"/destinations/{quote(name, safe='')}", f"Destination {name} saved and {state}."
        )

    def destination(
        self, view: View, status: int = 200, errors: dict[str, str] | None = None, message: str = ""
    ) -> Response:
        name = view.param("name")
        destination = service.get_destination(view.store, name)
        entry = self._entry(destination["type"])
        fields = (
            forms.settings_fields(entry["settings"], destination["settings"], errors or {}, editing=True)
            if entry
            else []
        )
        return view.render(
            "destination.html",
            status,
            nav="destinations",
            destination=destination,
            status_=service.destination_status(view.store, name),
            attempts=service.destination_attempts(view.store, name, ATTEMPTS_SHOWN),
            dead_letters=service.destination_dead_letters(view.store, name, DEAD_LETTERS_SHOWN),
            series=live.delivery_series(view.store, [name], 24),
            fields=fields,
            event_types=forms.EVENT_TYPES,
            ticked=forms.ticked_types(destination["filters"]),
            filters=destination["filters"],
            replays=service.destination_replays(view.store, name, REPLAYS_SHOWN),
            replay_since=_minute_input(now_ms() - 3_600_000),
            errors=errors or {},
            message=message,
        )

    def update_settings(self, view: View) -> Response:
        name = view.param("name")
        destination = service.get_destination(view.store, name)
        entry = self._entry(destination["type"])
        if entry is None:
            return view.not_found(f"destination type {destination['type']!r} is no longer installed")
        try:
            service.update_destination(
                view.store, name, raw_settings=forms.settings_from_form(view.form, entry["settings"])
            )
        except service.ServiceError as exc:
            return self.destination(view, 400, {exc.field or "": str(exc)}, str(exc))
        return view.redirect(
            f"/destinations/{quote(name, safe='')}", "Settings saved; delivery restarts with them."
        )

    def switch(self, view: View) -> Response:
        name = view.param("name")
        enabled = view.form.getlist("enabled")[-1:] == ["true"]
        service.update_destination(view.store, name, enabled=enabled)
        return view.redirect(
            f"/destinations/{quote(name, safe='')}", f"{name} is {'on' if enabled else 'off'}."
        )

    def update_filters(self, view: View) -> Response:
        name = view.param("name")
        try:
            service.update_destination(view.store, name, filters=forms.filters_from_form(view.form))
        except service.ServiceError as exc:
            return view.redirect(f"/destinations/{quote(name, safe='')}#filters", str(exc), "error")
        return view.redirect(f"/destinations/{quote(name, safe='')}#filters", "Filters saved.")

    def retry(self, view: View) -> Response:
        name = view.param("name")
        count = service.retry_dead_letters(view.store, name)
        flash = f"{count} dead letter{'s' if count != 1 else ''} queued: they are re-sent within a second."
        return view.redirect(f"/destinations/{quote(name, safe='')}#dead-letters", flash)

    def start_replay(self, view: View) -> Response:
        name = view.param("name")
        request = ReplayRequest(
            destination=name,
            since=view.field("since") or None,
            until=view.field("until") or None,
            events=tuple(forms.names(view.field("events"))),
        )
        try:
            job = service.start_replay(view.store, request)
        except ValueError as exc:
            return view.redirect(f"/destinations/{quote(name, safe='')}#replay", str(exc), "error")
        flash = f"Replay {job['id']} started: about {job['total']} events to read."
        return view.redirect(f"/destinations/{quote(name, safe='')}#replay", flash)

    def cancel_replay(self, view: View) -> Response:
        job_id = view.param("id")
        if not job_id.isdigit() or int(job_id) >= 2**31:
            return view.not_found(f"replay {job_id} does not exist")
        job = service.replay(view.store, int(job_id))
        target = f"/destinations/{quote(job['destination'] or '', safe='')}#replay"
        try:
            service.cancel_replay(view.store, int(job_id))
        except ValueError as exc:
            return view.redirect(target, str(exc), "error")
        return view.redirect(target, f"Replay {job_id} cancelled.")

    def delete_destination(self, view: View) -> Response:
        name = view.param("name")
        service.delete_destination(view.store, name)
        return view.redirect("/destinations", f"Destination {name} deleted.")

    # -- warehouses ----------------------------------------------------------------------------
    def warehouses(self, view: View) -> Response:
        """Each warehouse's status, and its tables with their row counts (or why they cannot be listed)."""
        rows = service.warehouses(view.store, self.admin.builtin_warehouse)
        for row in rows:
            row["tables"], row["tables_error"] = [], None
            try:
                row["tables"] = service.warehouse_tables(
                    view.store, self.admin.builtin_warehouse, row["name"]
                )
            except WarehouseError as exc:
                row["tables_error"] = str(exc)
        return view.render("warehouses.html", nav="warehouses", warehouses=rows)

    def sync_warehouse(self, view: View) -> Response:
        name = view.param("name")
        result = service.sync_warehouse(view.store, self.admin.builtin_warehouse, name)
        if result["error"]:
            return view.redirect("/warehouses", f"{name}: the sync failed: {result['error']}", "error")
        flash = f"{name}: loaded {result['events']} events ({result['rows']} rows); up to date with the log."
        return view.redirect("/warehouses", flash)

    # -- reference ---------------------------------------------------------------------------------
    async def docs(self, request: Request) -> Response:
        session = self.session_of(request)
        signed_in = session is not None and await asyncio.to_thread(logged_in, self.admin.store, session)
        return self.html(
            "docs.html",
            200,
            session or Session(),
            logged_in=signed_in,
            nav="docs",
            collection=list(ROUTES),
            operations=OPERATIONS,
        )

    def routes(self) -> list[Route]:
        page = self.page
        return [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", page(self.logout), methods=["POST"]),
            Route("/docs", self.docs, methods=["GET"]),
            Route("/", page(self.overview), methods=["GET"]),
            Route("/sources", page(self.sources), methods=["GET"]),
            Route("/sources", page(self.create_source), methods=["POST"]),
            Route("/sources/{name}", page(self.source), methods=["GET"]),
            Route("/sources/{name}/write-key", page(self.rotate_write_key), methods=["POST"]),
            Route("/sources/{name}/delete", page(self.delete_source), methods=["POST"]),
            Route("/destinations", page(self.destinations), methods=["GET"]),
            Route("/catalog", page(self.catalog), methods=["GET"]),
            Route("/catalog/{type}", page(self.new_destination), methods=["GET"]),
            Route("/catalog/{type}", page(self.create_destination), methods=["POST"]),
            Route("/destinations/{name}", page(self.destination), methods=["GET"]),
            Route("/destinations/{name}/settings", page(self.update_settings), methods=["POST"]),
            Route("/destinations/{name}/enabled", page(self.switch), methods=["POST"]),
            Route("/destinations/{name}/filters", page(self.update_filters), methods=["POST"]),
            Route("/destinations/{name}/retry", page(self.retry), methods=["POST"]),
            Route("/destinations/{name}/delete", page(self.delete_destination), methods=["POST"]),
            Route("/destinations/{name}/replays", page(self.start_replay), methods=["POST"]),
            Route("/replays/{id}/cancel", page(self.cancel_replay), methods=["POST"]),
            Route("/warehouses", page(self.warehouses), methods=["GET"]),
            Route("/warehouses/{name}/sync", page(self.sync_warehouse), methods=["POST"]),
        ]
