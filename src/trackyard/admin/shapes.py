"""The JSON shapes of the admin API's input and output, as schemas (see schema.py): the
request bodies it checks and the responses the OpenAPI document promises."""

from __future__ import annotations

from trackyard.admin.schema import (
    ANY,
    BOOLEAN,
    INTEGER,
    NAME,
    NUMBER,
    STRING,
    Schema,
    array,
    obj,
    string_list,
)

ID: Schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
PATH_SCHEMAS: dict[str, Schema] = {"id": ID}  # any other path parameter is a NAME


def path_schema(name: str) -> Schema:
    return PATH_SCHEMAS.get(name, NAME)


FILTERS = obj(
    allow_types=string_list(),
    block_types=string_list(),
    allow_events=string_list(),
    block_events=string_list(),
)
SOURCE = obj(
    ("name", "slug", "write_key", "created_at"),
    True,
    name=STRING,
    slug=STRING,
    write_key=STRING,
    created_at=STRING,
)
EVENT = obj(
    ("seq", "received_at", "type", "name", "user", "event"),
    True,
    seq=INTEGER,
    received_at=STRING,
    type=STRING,
    name=STRING,
    user=STRING,
    event={"type": "object"},
)
FAILURE = obj(
    ("id", "received_at", "code", "reason", "event"),
    True,
    id=INTEGER,
    received_at=STRING,
    code=STRING,
    reason=STRING,
    event=ANY,
)
SETTING = obj(
    ("name", "label", "type", "required", "help", "secret", "choices", "advanced"),
    True,
    name=STRING,
    label=STRING,
    type={
        "type": "string",
        "enum": ["string", "secret", "boolean", "integer", "number", "choice", "mapping", "list"],
    },
    required=BOOLEAN,
    default=ANY,
    help=STRING,
    secret=BOOLEAN,
    choices=string_list(),
    advanced=BOOLEAN,
)
CATALOG_ENTRY = obj(
    ("slug", "name", "category", "description", "settings"),
    True,
    slug=STRING,
    name=STRING,
    category=STRING,
    description=STRING,
    settings=array(SETTING),
)
DESTINATION = obj(
    ("name", "type", "display_name", "category", "enabled", "settings", "filters"),
    True,
    name=STRING,
    type=STRING,
    display_name=STRING,
    category=STRING,
    source={"type": "string", "nullable": True},
    enabled=BOOLEAN,
    settings={"type": "object", "description": 'secrets appear only as {"set": true|false}'},
    filters=FILTERS,
)
STATUS = obj(
    ("delivered", "retrying", "failed", "filtered", "lag", "dead_letters", "last_errors"),
    True,
    delivered=INTEGER,
    retrying=INTEGER,
    failed=INTEGER,
    filtered=INTEGER,
    lag=INTEGER,
    dead_letters=INTEGER,
    last_errors=array(obj((), True, at=STRING, status=INTEGER, reason=STRING, response=STRING)),
)
ATTEMPT = obj(
    ("at", "status", "verdict", "events", "reason", "request", "response"),
    True,
    at=STRING,
    status=INTEGER,
    verdict={"type": "string", "enum": ["delivered", "retry", "give_up"]},
    latency_ms=NUMBER,
    events=INTEGER,
    message_ids=string_list(),
    reason=STRING,
    request=STRING,
    response=STRING,
)
DEAD_LETTER = obj(
    ("id", "seq", "message_id", "state", "failed_at", "status", "reason", "request", "response", "body"),
    True,
    id=INTEGER,
    seq=INTEGER,
    message_id=STRING,
    state=STRING,
    failed_at=STRING,
    status=INTEGER,
    reason=STRING,
    request=STRING,
    response=STRING,
    body={"type": "string", "description": "the payload as JSON text, secrets redacted"},
)
TEST_RESULT = obj(
    ("verdict", "status", "reason", "request", "response"),
    True,
    verdict={"type": "string", "enum": ["delivered", "retry", "give_up", "skipped"]},
    status=INTEGER,
    reason=STRING,
    latency_ms=NUMBER,
    request=STRING,
    response=STRING,
)
MINUTE = obj(
    ("minute", "delivered", "retried", "failed", "filtered"),
    True,
    minute=INTEGER,
    delivered=INTEGER,
    retried=INTEGER,
    failed=INTEGER,
    filtered=INTEGER,
)
EVENT_SERIES = obj(
    ("since_minute", "until_minute", "sources"),
    True,
    since_minute=INTEGER,
    until_minute=INTEGER,
    sources=array(
        obj(
            ("name", "total", "counts"),
            True,
            name=STRING,
            total=INTEGER,
            counts=array({"type": "array", "items": INTEGER, "minItems": 2, "maxItems": 2}),
        )
    ),
)
DELIVERY_SERIES = obj(
    ("since_minute", "until_minute", "destinations"),
    True,
    since_minute=INTEGER,
    until_minute=INTEGER,
    destinations=array(obj(("name", "minutes"), True, name=STRING, minutes=array(MINUTE))),
)
HEALTH = obj(
    ("name", "enabled", "health", "status"), True, name=STRING, enabled=BOOLEAN, health=STRING, status=STATUS
)
ISO_TIME: Schema = {
    "type": "string",
    "minLength": 10,
    "maxLength": 40,
    "description": "ISO-8601, e.g. 2026-11-01T09:30:00Z",
}
NULLABLE_STRING: Schema = {"type": "string", "nullable": True}
REPLAY_REQUEST = obj(
    (),
    since=ISO_TIME,
    until=ISO_TIME,
    events=string_list(),
    types=string_list(),
    rate={
        "type": "number",
        "minimum": 0,
        "maximum": 1_000_000,
        "description": "events per second, 0: no limit",
    },
)
REPLAY = obj(
    ("id", "destination", "state", "total", "read", "sent", "delivered", "failed", "filtered", "percent"),
    True,
    id=INTEGER,
    percent={"type": "integer", "minimum": 0, "maximum": 100},
    destination=NULLABLE_STRING,
    source=NULLABLE_STRING,
    state={"type": "string", "enum": ["pending", "running", "done", "cancelled", "failed"]},
    since=NULLABLE_STRING,
    until=NULLABLE_STRING,
    events=string_list(),
    types=string_list(),
    rate=NUMBER,
    total=INTEGER,
    read=INTEGER,
    sent=INTEGER,
    delivered=INTEGER,
    failed=INTEGER,
    filtered=INTEGER,
    error=STRING,
    created=STRING,
    finished=NULLABLE_STRING,
)
REPLAY_PREVIEW = obj(
    ("destination", "read", "sent", "filtered", "events", "requests"),
    True,
    destination=STRING,
    read=INTEGER,
    sent=INTEGER,
    filtered=INTEGER,
    events={"type": "object", "additionalProperties": INTEGER},
    requests=string_list(),
)
WAREHOUSE = obj(
    ("name", "dialect", "target", "builtin", "last_sync", "events_loaded", "rows_loaded", "lag", "failing"),
    True,
    name=STRING,
    dialect=STRING,
    target={"type": "string", "description": "where it is, without secrets"},
    builtin=BOOLEAN,
    created=NULLABLE_STRING,
    last_sync=NULLABLE_STRING,
    events_loaded=INTEGER,
    rows_loaded=INTEGER,
    position=INTEGER,
    lag=INTEGER,
    failing=BOOLEAN,
    last_error=NULLABLE_STRING,
    last_error_at=NULLABLE_STRING,
    warnings=string_list(),
)
WAREHOUSE_TABLE = obj(
    ("schema", "table", "rows"),
    False,
    schema={"type": "string", "description": "the source's schema"},
    table=STRING,
    rows=INTEGER,
)
SYNC_RESULT = obj(
    ("name", "events", "rows", "batches", "position", "head", "warnings"),
    True,
    name=STRING,
    events=INTEGER,
    rows=INTEGER,
    batches=INTEGER,
    position=INTEGER,
    head=INTEGER,
    warnings=string_list(),
    error=NULLABLE_STRING,
)
OVERVIEW = obj(
    ("sources", "destinations", "warehouses"),
    True,
    sources=array(SOURCE),
    destinations=array(HEALTH),
    warehouses=array(WAREHOUSE),
)
