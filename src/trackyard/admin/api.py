"""The admin JSON API, `/api/v1/…`: thin handlers over the service layer.

Every operation is declared once (method, path, schemas, handler); the routes and the
OpenAPI document (`openapi.py`) are both built from these declarations.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from trackyard.admin import live, service
from trackyard.admin.auth import AuthError, check_api_request
from trackyard.admin.context import AdminContext
from trackyard.admin.schema import (
    BOOLEAN,
    INTEGER,
    NAME,
    STRING,
    InvalidInput,
    Schema,
    array,
    check,
    obj,
    query_value,
)
from trackyard.admin.shapes import (
    ATTEMPT,
    CATALOG_ENTRY,
    DEAD_LETTER,
    DELIVERY_SERIES,
    DESTINATION,
    EVENT,
    EVENT_SERIES,
    FAILURE,
    FILTERS,
    OVERVIEW,
    REPLAY,
    REPLAY_PREVIEW,
    REPLAY_REQUEST,
    SOURCE,
    STATUS,
    SYNC_RESULT,
    TEST_RESULT,
    WAREHOUSE,
    WAREHOUSE_TABLE,
    path_schema,
)
from trackyard.archive.service import ReplayRequest
from trackyard.archive.wiring import archive_storage
from trackyard.store import SourceExists, SourceNotFound, StoreUnavailable
from trackyard.store.archive import ReplayNotFound
from trackyard.store.delivery import DestinationExists, DestinationNotFound

PREFIX = "/api/v1"
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class Param:
    name: str
    schema: Schema
    description: str


@dataclass
class Call:
    """One API request, authenticated, with its input checked against the declaration."""

    admin: AdminContext
    request: Request
    path: dict[str, str]
    query: dict[str, Any]
    body: Any

    @property
    def store(self) -> Any:
        return self.admin.store

    @property
    def name(self) -> str:
        return str(self.path["name"])

    @property
    def id(self) -> int:
        return int(self.path["id"])


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # below PREFIX, with {name} placeholders
    summary: str
    tag: str
    handler: Handler
    body: Schema | None = None
    query: tuple[Param, ...] = ()
    response: Schema | None = None  # None: 204 No Content
    status: int = 200
    media_type: str = "application/json"
    conflicts: bool = False  # may answer 409

    @property
    def full_path(self) -> str:
        return PREFIX + self.path

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def names_a_thing(self) -> bool:
        """Whether it names a source or destination that may not exist (404)."""
        return bool(self.path_params) or any(param.name == "destination" for param in self.query)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")


# -- query parameters ----------------------------------------------------------------------
LIMIT = Param("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "how many, at most")
HOURS = Param("hours", {"type": "integer", "minimum": 1, "maximum": 24, "default": 24}, "how far back")


# -- handlers ------------------------------------------------------------------------------
def list_sources(call: Call) -> Any:
    return service.list_sources(call.store)


def create_source(call: Call) -> Any:
    source = service.create_source(call.store, call.body["name"], call.body.get("write_key"))
    call.admin.sources_changed()
    return service.source_view(source)


def get_source(call: Call) -> Any:
    return service.source_view(service.get_source(call.store, call.name))


def rotate_write_key(call: Call) -> Any:
    source = service.rotate_write_key(call.store, call.name)
    call.admin.sources_changed()
    return service.source_view(source)


def delete_source(call: Call) -> None:
    service.delete_source(call.store, call.name)
    call.admin.sources_changed()


def source_events(call: Call) -> Any:
    return service.recent_events(call.store, call.name, call.query["limit"])


def source_failures(call: Call) -> Any:
    return service.failed_events(call.store, call.name, call.query["limit"])


async def source_live(call: Call) -> Response:
    source = await asyncio.to_thread(service.get_source, call.store, call.name)
    resume = call.request.headers.get("last-event-id")
    return StreamingResponse(
        live.stream(call.store, source, resume),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def catalog(call: Call) -> Any:
    return service.catalog()


def send_test_event(call: Call) -> Any:
    return service.send_test_event(
        call.store, call.path["type"], call.body.get("settings"), call.body.get("destination")
    )


def list_destinations(call: Call) -> Any:
    return service.list_destinations(call.store)


def create_destination(call: Call) -> Any:
    body = call.body
    config = service.add_destination(
        call.store,
        body["source"],
        body["type"],
        body["name"],
        body.get("settings", {}),
        body.get("filters"),
        body.get("enabled", True),
    )
    return service.destination_view(call.store, config)


def get_destination(call: Call) -> Any:
    return service.get_destination(call.store, call.name)


def update_destination(call: Call) -> Any:
    config = service.update_destination(
        call.store,
        call.name,
        raw_settings=call.body.get("settings"),
        filters=call.body.get("filters"),
        enabled=call.body.get("enabled"),
    )
    return service.destination_view(call.store, config)


def delete_destination(call: Call) -> None:
    service.delete_destination(call.store, call.name)


def enable_destination(call: Call) -> Any:
    return service.destination_view(
        call.store, service.update_destination(call.store, call.name, enabled=True)
    )


def disable_destination(call: Call) -> Any:
    return service.destination_view(
        call.store, service.update_destination(call.store, call.name, enabled=False)
    )


def destination_status(call: Call) -> Any:
    return service.destination_status(call.store, call.name)


def destination_attempts(call: Call) -> Any:
    return service.destination_attempts(call.store, call.name, call.query["limit"], call.query["failed"])


def destination_dead_letters(call: Call) -> Any:
    return service.destination_dead_letters(call.store, call.name, call.query["limit"])


def retry_dead_letters(call: Call) -> Any:
    return {"queued": service.retry_dead_letters(call.store, call.name)}


def received_per_minute(call: Call) -> Any:
    return live.received_series(call.store, call.admin.received, call.query["hours"])


def delivered_per_minute(call: Call) -> Any:
    wanted = call.query.get("destination")
    if wanted:
        call.store.get_destination(wanted)
    names = [wanted] if wanted else [config.name for config in call.store.list_destinations()]
    return live.delivery_series(call.store, names, call.query["hours"])


def _replay_request(call: Call) -> ReplayRequest:
    body = call.body
    return ReplayRequest(
        destination=call.name,
        since=body.get("since"),
        until=body.get("until"),
        events=tuple(body.get("events", ())),
        types=tuple(body.get("types", ())),
        rate=float(body.get("rate", 0.0)),
    )


def preview_replay(call: Call) -> Any:
    return service.preview_replay(call.store, archive_storage(call.admin.config), _replay_request(call))


def start_replay(call: Call) -> Any:
    return service.start_replay(call.store, _replay_request(call))


def destination_replays(call: Call) -> Any:
    return service.destination_replays(call.store, call.name, call.query["limit"])


def get_replay(call: Call) -> Any:
    return service.replay(call.store, call.id)


def cancel_replay(call: Call) -> Any:
    return service.cancel_replay(call.store, call.id)


def list_warehouses(call: Call) -> Any:
    return service.warehouses(call.store, call.admin.builtin_warehouse)


def get_warehouse(call: Call) -> Any:
    return service.warehouse_status(call.store, call.admin.builtin_warehouse, call.name)


def sync_warehouse(call: Call) -> Any:
    return service.sync_warehouse(call.store, call.admin.builtin_warehouse, call.name)


def warehouse_tables(call: Call) -> Any:
    return service.warehouse_tables(call.store, call.admin.builtin_warehouse, call.name)


def overview(call: Call) -> Any:
    return {
        "sources": service.list_sources(call.store),
        "destinations": service.destination_health(call.store),
        "warehouses": service.warehouses(call.store, call.admin.builtin_warehouse),
    }


# -- declarations --------------------------------------------------------------------------
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/sources",
        "List sources with their write keys",
        "sources",
        list_sources,
        response=array(SOURCE),
    ),
    Operation(
        "POST",
        "/sources",
        "Create a source",
        "sources",
        create_source,
        body=obj(("name",), name=NAME, write_key={"type": "string", "minLength": 1, "maxLength": 128}),
        response=SOURCE,
        status=201,
        conflicts=True,
    ),
    Operation("GET", "/sources/{name}", "One source", "sources", get_source, response=SOURCE),
    Operation(
        "POST",
        "/sources/{name}/write-key",
        "Replace a source's write key; the old one stops working",
        "sources",
        rotate_write_key,
        response=SOURCE,
    ),
    Operation(
        "DELETE",
        "/sources/{name}",
        "Delete a source (refused while destinations use it); its events stay in the log",
        "sources",
        delete_source,
    ),
    Operation(
        "GET",
        "/sources/{name}/events",
        "The newest events of a source, oldest first",
        "events",
        source_events,
        query=(LIMIT,),
        response=array(EVENT),
    ),
    Operation(
        "GET",
        "/sources/{name}/failures",
        "The newest events of a source that failed on ingest, with the reason",
        "events",
        source_failures,
        query=(LIMIT,),
        response=array(FAILURE),
    ),
    Operation(
        "GET",
        "/sources/{name}/live",
        "Server-Sent Events: the newest events and failures, then each as it arrives (event: event|failure)",
        "events",
        source_live,
        response=STRING,
        media_type="text/event-stream",
    ),
    Operation(
        "GET",
        "/catalog",
        "Every installed destination type and its settings",
        "destinations",
        catalog,
        response=array(CATALOG_ENTRY),
    ),
    Operation(
        "POST",
        "/catalog/{type}/test",
        "Send a test event with these settings; with `destination`, empty secrets (or all settings, when left out) are its own",
        "destinations",
        send_test_event,
        body=obj((), settings={"type": "object"}, destination=NAME),
        response=TEST_RESULT,
    ),
    Operation(
        "GET",
        "/destinations",
        "List destinations (secrets only say whether they are set)",
        "destinations",
        list_destinations,
        response=array(DESTINATION),
    ),
    Operation(
        "POST",
        "/destinations",
        "Add a destination; settings are checked against the type's schema",
        "destinations",
        create_destination,
        body=obj(
            ("name", "source", "type"),
            name=NAME,
            source=NAME,
            type=NAME,
            settings={"type": "object"},
            filters=FILTERS,
            enabled=BOOLEAN,
        ),
        response=DESTINATION,
        status=201,
        conflicts=True,
    ),
    Operation(
        "GET",
        "/destinations/{name}",
        "One destination",
        "destinations",
        get_destination,
        response=DESTINATION,
    ),
    Operation(
        "PATCH",
        "/destinations/{name}",
        "Change settings (a secret left empty keeps its value), filters or the switch",
        "destinations",
        update_destination,
        body=obj((), settings={"type": "object"}, filters=FILTERS, enabled=BOOLEAN),
        response=DESTINATION,
    ),
    Operation(
        "DELETE",
        "/destinations/{name}",
        "Delete a destination and its delivery records",
        "destinations",
        delete_destination,
    ),
    Operation(
        "POST",
        "/destinations/{name}/enable",
        "Switch a destination on",
        "destinations",
        enable_destination,
        response=DESTINATION,
    ),
    Operation(
        "POST",
        "/destinations/{name}/disable",
        "Switch a destination off",
        "destinations",
        disable_destination,
        response=DESTINATION,
    ),
    Operation(
        "GET",
        "/destinations/{name}/status",
        "Delivered, retrying, failed, lag, last errors",
        "delivery",
        destination_status,
        response=STATUS,
    ),
    Operation(
        "GET",
        "/destinations/{name}/attempts",
        "Recent delivery attempts, newest first, with the request and response of failures",
        "delivery",
        destination_attempts,
        query=(LIMIT, Param("failed", {"type": "boolean", "default": False}, "only failed attempts")),
        response=array(ATTEMPT),
    ),
    Operation(
        "GET",
        "/destinations/{name}/dead-letters",
        "Events the tool refused for good, with the request and response",
        "delivery",
        destination_dead_letters,
        query=(LIMIT,),
        response=array(DEAD_LETTER),
    ),
    Operation(
        "POST",
        "/destinations/{name}/retry",
        "Re-send every dead letter",
        "delivery",
        retry_dead_letters,
        response=obj(("queued",), True, queued=INTEGER),
    ),
    Operation(
        "POST",
        "/destinations/{name}/replays/preview",
        "Count what a replay of this range would send (nothing is sent)",
        "replays",
        preview_replay,
        body=REPLAY_REQUEST,
        response=REPLAY_PREVIEW,
    ),
    Operation(
        "POST",
        "/destinations/{name}/replays",
        "Replay a time range of the destination's source into it",
        "replays",
        start_replay,
        body=REPLAY_REQUEST,
        response=REPLAY,
        status=201,
    ),
    Operation(
        "GET",
        "/destinations/{name}/replays",
        "The newest replays into a destination, with their progress",
        "replays",
        destination_replays,
        query=(LIMIT,),
        response=array(REPLAY),
    ),
    Operation("GET", "/replays/{id}", "One replay and its progress", "replays", get_replay, response=REPLAY),
    Operation("POST", "/replays/{id}/cancel", "Stop a replay", "replays", cancel_replay, response=REPLAY),
    Operation(
        "GET",
        "/warehouses",
        "Warehouses: last sync, events and rows loaded, lag behind the log, last error",
        "warehouses",
        list_warehouses,
        response=array(WAREHOUSE),
    ),
    Operation(
        "GET", "/warehouses/{name}", "One warehouse's status", "warehouses", get_warehouse, response=WAREHOUSE
    ),
    Operation(
        "POST",
        "/warehouses/{name}/sync",
        "Load everything pending into a warehouse now (answers when done)",
        "warehouses",
        sync_warehouse,
        response=SYNC_RESULT,
    ),
    Operation(
        "GET",
        "/warehouses/{name}/tables",
        "The tables of a warehouse's source schemas, with their row counts",
        "warehouses",
        warehouse_tables,
        response=array(WAREHOUSE_TABLE),
    ),
    Operation(
        "GET",
        "/metrics/events",
        "Events received per minute per source",
        "metrics",
        received_per_minute,
        query=(HOURS,),
        response=EVENT_SERIES,
    ),
    Operation(
        "GET",
        "/metrics/delivery",
        "Delivery outcomes per minute per destination",
        "metrics",
        delivered_per_minute,
        query=(HOURS, Param("destination", NAME, "only this destination")),
        response=DELIVERY_SERIES,
    ),
    Operation(
        "GET",
        "/overview",
        "Sources, and each destination's counts and health",
        "metrics",
        overview,
        response=OVERVIEW,
    ),
)


# -- the machinery -------------------------------------------------------------------------
def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": 'Bearer realm="trackyard"'} if status == 401 else None
    return json_response(body, status, headers)


def _path(request: Request) -> dict[str, Any]:
    return {name: query_value(path_schema(name), str(raw), name) for name, raw in request.path_params.items()}


def _query(operation: Operation, request: Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for param in operation.query:
        raw = request.query_params.get(param.name)
        values[param.name] = (
            param.schema.get("default") if raw is None else query_value(param.schema, raw, param.name)
        )
    return values


async def _body(operation: Operation, request: Request) -> Any:
    if operation.body is None:
        return None
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInput(f"the request body may be at most {MAX_BODY_BYTES // 1024} KB", "")
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}", "") from None
    check(operation.body, body)
    return body


def _failure(exc: Exception) -> Response:
    """The answer for an error a handler raised; anything unexpected propagates (500)."""
    if isinstance(exc, AuthError):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, InvalidInput):
        return error_response(400, "invalid_input", str(exc), exc.field or None)
    if isinstance(exc, service.ServiceError):
        return error_response(400, "invalid_request", str(exc), exc.field)
    if isinstance(exc, SourceNotFound | DestinationNotFound | ReplayNotFound | service.WarehouseNotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, SourceExists | DestinationExists):
        return error_response(409, "exists", str(exc))
    if isinstance(exc, StoreUnavailable):
        return error_response(503, "store_unavailable", str(exc))
    if isinstance(exc, ValueError):
        return error_response(400, "invalid_request", str(exc))
    raise exc


def endpoint(admin: AdminContext, operation: Operation) -> Callable[[Request], Any]:
    async def handle(request: Request) -> Response:
        try:
            await asyncio.to_thread(check_api_request, admin.store, admin.codec, request)
            call = Call(
                admin, request, _path(request), _query(operation, request), await _body(operation, request)
            )
            if inspect.iscoroutinefunction(operation.handler):
                result = await operation.handler(call)
            else:
                result = await asyncio.to_thread(operation.handler, call)
        except Exception as exc:
            return _failure(exc)
        if isinstance(result, Response):
            return result
        if operation.response is None:
            return Response(status_code=204)
        return json_response(result, operation.status)

    handle.__name__ = operation.operation_id
    return handle


def not_found(request: Request) -> Response:
    return error_response(404, "not_found", f"no API route {request.method} {request.url.path}")


def routes(admin: AdminContext) -> list[Route]:
    """A route per operation, then a JSON 404 for any other path under /api."""
    built = [Route(op.full_path, endpoint(admin, op), methods=[op.method]) for op in OPERATIONS]
    return [*built, Route("/api/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
