"""The OpenAPI 3 document of the admin API, written from the operations' declarations."""

from __future__ import annotations

from typing import Any

from trackyard import __version__
from trackyard.admin.api import OPERATIONS, Operation
from trackyard.admin.schema import STRING, Schema, obj
from trackyard.admin.shapes import path_schema

ERROR = obj(("code", "message"), True, code=STRING, message=STRING, field=STRING)
_DESCRIPTIONS = {
    400: "The input is invalid; `field` names the culprit",
    401: "No admin token, or a wrong one (write keys are not admin credentials)",
    403: "A session request that changes something without its CSRF token",
    404: "No such source, destination, destination type, replay or warehouse",
    409: "The name (or write key) is already taken",
    503: "The store cannot be reached; retry later",
}


def _error(status: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _error_statuses(operation: Operation) -> list[int]:
    statuses = [401, 503]
    if operation.body is not None or operation.query or operation.path_params or operation.method != "GET":
        statuses.append(400)
    if operation.method != "GET":
        statuses.append(403)
    if operation.names_a_thing:
        statuses.append(404)
    if operation.conflicts:
        statuses.append(409)
    return sorted(statuses)


def _success(operation: Operation) -> dict[str, Any]:
    if operation.response is None:
        return {"description": "Done"}
    return {"description": "OK", "content": {operation.media_type: {"schema": operation.response}}}


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    path: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": path_schema(name)}
        for name in operation.path_params
    ]
    query = [
        {"name": p.name, "in": "query", "required": False, "description": p.description, "schema": p.schema}
        for p in operation.query
    ]
    return path + query


def _operation(operation: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {str(operation.status if operation.response else 204): _success(operation)}
    responses.update({str(status): _error(status) for status in _error_statuses(operation)})
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "parameters": _parameters(operation),
        "responses": responses,
    }
    if operation.body is not None:
        schema: Schema = operation.body
        document["requestBody"] = {"required": False, "content": {"application/json": {"schema": schema}}}
    return document


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.full_path, {})[operation.method.lower()] = _operation(operation)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "trackyard admin API",
            "version": __version__,
            "description": (
                "Sources, destinations, delivery and live events of a trackyard server: the same service "
                "layer as the web app and the `trackyard` command. Authenticate with the admin token "
                "(`trackyard admin token`) as `Authorization: Bearer <token>`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"adminToken": []}],
    }
