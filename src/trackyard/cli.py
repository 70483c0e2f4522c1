"""The `trackyard` command. Every subcommand works with or without a running server."""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from trackyard import __version__
from trackyard.app import ADMIN_TOKEN_SETTING, Runtime, bootstrap, build_app, new_admin_token, new_write_key
from trackyard.config import Config
from trackyard.destinations import registry
from trackyard.destinations.base import SettingsError, parse_settings, redacted, settings_to_json
from trackyard.spec import format_ms, now_ms, parse_ms
from trackyard.store import SourceExists, SourceNotFound, Store
from trackyard.store.delivery import DestinationExists, DestinationNotFound

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class CommandError(Exception):
    """A user mistake: printed without a traceback, exit status 2."""


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        sys.exit(2)
    try:
        args.handler(args)
    except (
        CommandError,
        SourceNotFound,
        SourceExists,
        DestinationExists,
        DestinationNotFound,
        ValueError,
    ) as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackyard", description="Self-hosted, Segment-compatible CDP.")
    parser.add_argument("--version", action="version", version=f"trackyard {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the collection API (and every background role)")
    serve.add_argument(
        "--data-dir", type=Path, help="data directory (default: $TRACKYARD_DATA_DIR or ./trackyard-data)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8088)
    serve.set_defaults(handler=cmd_serve)

    source = commands.add_parser("source", help="manage sources").add_subparsers(metavar="ACTION")
    create = source.add_parser("create", help="create a source and print its write key")
    create.add_argument("name")
    create.add_argument("--write-key", help="use this write key instead of a generated one")
    create.set_defaults(handler=cmd_source_create)
    listing = source.add_parser("list", help="list sources")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_source_list)

    events = commands.add_parser("events", help="print stored events, oldest first")
    events.add_argument("--source", help="only this source (by name)")
    events.add_argument("--since", help="only events received at or after this ISO-8601 time")
    events.add_argument("--limit", type=int, default=None, help="print at most N events")
    events.add_argument("--json", action="store_true", help="JSON lines of the stored, normalised events")
    events.add_argument("--failed", action="store_true", help="events that failed validation on ingest")
    events.set_defaults(handler=cmd_events)

    _destination_commands(commands)

    admin = commands.add_parser("admin", help="administration").add_subparsers(metavar="ACTION")
    token = admin.add_parser("token", help="print the admin API token")
    token.add_argument("--rotate", action="store_true", help="replace the token with a new one")
    token.set_defaults(handler=cmd_admin_token)
    return parser


def _config(args: argparse.Namespace, **overrides: Any) -> Config:
    return Config.from_env(data_dir=getattr(args, "data_dir", None), **overrides)


@contextmanager
def _store(config: Config) -> Iterator[Store]:
    store = config.open_store()
    try:
        yield store
    finally:
        store.close()


# -- serve -----------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    logging.basicConfig(
        level=os.environ.get("TRACKYARD_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = _config(args, host=args.host, port=args.port)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with _single_server_lock(config):
        store = config.open_store()
        first = bootstrap(store)
        _print_banner(config, store, first)
        runtime = Runtime(config, store)
        server = uvicorn.Server(
            uvicorn.Config(
                build_app(runtime),
                host=config.host,
                port=config.port,
                loop="uvloop",
                http="httptools",
                lifespan="on",
                access_log=False,
                proxy_headers=False,
                server_header=False,
                log_level="warning",
                timeout_keep_alive=30,
            )
        )
        server.run()


@contextmanager
def _single_server_lock(config: Config) -> Iterator[None]:
    """The embedded store has one writer: refuse to start a second server on the same data directory."""
    if config.uses_postgres:
        yield
        return
    handle = open(config.data_dir / "serve.lock", "w")  # noqa: SIM115 - held for the life of the server
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CommandError(
            f"another `trackyard serve` is using {config.data_dir}; the embedded SQLite store has one writer "
            "(use TRACKYARD_DATABASE_URL=postgresql://… to run several processes)"
        ) from None
    try:
        yield
    finally:
        handle.close()


def _print_banner(config: Config, store: Store, first: Any) -> None:
    base = config.public_url or f"http://{config.host}:{config.port}"
    if first.happened:
        out.print("[bold]trackyard is set up.[/bold] These credentials are printed only this once:")
        if first.source is not None:
            out.print(f"  write key of source 'default': [bold]{first.source.write_key}[/bold]")
        if first.admin_token is not None:
            out.print(f"  admin token:                   [bold]{first.admin_token}[/bold]")
    storage = "PostgreSQL" if config.uses_postgres else f"SQLite in {config.data_dir}"
    out.print(f"trackyard {__version__} serving on {base} ({storage})")
    out.print(f"  collection API: {base}/v1   (point Segment SDKs' host here)")
    out.print(f"  web UI:         {base}/")
    out.print(f"  API reference:  {base}/docs")


# -- sources ---------------------------------------------------------------------------
def cmd_source_create(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        source = store.create_source(args.name, args.write_key or new_write_key())
    print(source.write_key)


def cmd_source_list(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        sources = store.list_sources()
    if args.json:
        for source in sources:
            print(orjson.dumps(source.to_json()).decode())
        return
    table = Table("name", "slug", "write key", "created")
    for source in sources:
        table.add_row(source.name, source.slug, source.write_key, format_ms(source.created_ms))
    out.print(table)


# -- events ----------------------------------------------------------------------------
def cmd_events(args: argparse.Namespace) -> None:
    since_ms = None
    if args.since:
        since_ms = parse_ms(args.since)
        if since_ms is None:
            raise CommandError(f"--since {args.since!r} is not an ISO-8601 date-time")
    if args.limit is not None and args.limit < 0:
        raise CommandError("--limit must be zero or more")
    with _store(_config(args)) as store:
        names = {source.id: source.name for source in store.list_sources()}
        source_id = store.get_source(args.source).id if args.source else None
        if args.failed:
            _print_failures(store, names, source_id, since_ms, args)
        else:
            _print_events(store, names, source_id, since_ms, args)


def _print_events(
    store: Store, names: dict[int, str], source_id: int | None, since_ms: int | None, args: argparse.Namespace
) -> None:
    printer = _json_line if args.json else _event_line(names)
    for stored in _paged(
        lambda after, limit: store.read_log(after, limit, source_id, since_ms), lambda e: e.seq, args.limit
    ):
        printer(stored.body if args.json else stored)


def _print_failures(
    store: Store, names: dict[int, str], source_id: int | None, since_ms: int | None, args: argparse.Namespace
) -> None:
    failures = store.read_failures(
        source_id, since_ms, limit=args.limit if args.limit is not None else 1_000_000
    )
    for failure in failures:
        record = {
            "source": names.get(failure.source_id),
            "receivedAt": format_ms(failure.received_ms),
            "code": failure.code,
            "reason": failure.reason,
            "event": orjson.loads(failure.body),
        }
        if args.json:
            _json_line(orjson.dumps(record))
        else:
            out.print(
                f"{record['receivedAt']}  {record['source']}  [red]{failure.code}[/red]  {failure.reason}"
            )


def _paged(
    read: Callable[[int, int], list[Any]], seq_of: Callable[[Any], int], limit: int | None
) -> Iterator[Any]:
    """Read the log page by page so memory stays flat however long it is."""
    after, remaining = 0, limit
    while remaining is None or remaining > 0:
        page = read(after, 1000 if remaining is None else min(1000, remaining))
        if not page:
            return
        yield from page
        after = seq_of(page[-1])
        if remaining is not None:
            remaining -= len(page)


def _json_line(body: bytes) -> None:
    sys.stdout.write(body.decode() + "\n")


def _event_line(names: dict[int, str]) -> Callable[[Any], None]:
    def line(stored: Any) -> None:
        event = stored.event()
        what = event.get("event") or event.get("name") or event.get("groupId") or ""
        who = event.get("userId") or event.get("anonymousId") or ""
        out.print(
            f"{stored.seq:>8}  {event['receivedAt']}  {names.get(stored.source_id, '?'):<12} "
            f"{event['type']:<8} {what!s:<24} {who}"
        )

    return line


# -- destinations ----------------------------------------------------------------------
def _destination_commands(commands: Any) -> None:
    parser = commands.add_parser("destination", help="manage destinations").add_subparsers(metavar="ACTION")
    catalog = parser.add_parser("catalog", help="every installed destination type and its settings")
    catalog.add_argument("--json", action="store_true")
    catalog.set_defaults(handler=cmd_destination_catalog)
    add = parser.add_parser("add", help="add a destination to a source (enabled at once)")
    add.add_argument("source", help="source name")
    add.add_argument("type", help="destination type (see `trackyard destination catalog`)")
    add.add_argument("--name", required=True, help="a name for this destination")
    add.add_argument(
        "--setting", action="append", default=[], metavar="KEY=VALUE", help="a setting; repeatable"
    )
    add.set_defaults(handler=cmd_destination_add)
    listing = parser.add_parser("list", help="list destinations")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_destination_list)
    for action, handler in (("enable", cmd_destination_enable), ("disable", cmd_destination_disable)):
        sub = parser.add_parser(action, help=f"{action} a destination")
        sub.add_argument("name")
        sub.set_defaults(handler=handler)
    retry = parser.add_parser("retry", help="re-send a destination's dead letters")
    retry.add_argument("name")
    retry.set_defaults(handler=cmd_destination_retry)
    status = parser.add_parser("status", help="delivery counts, lag and last errors of a destination")
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_destination_status)


def cmd_destination_catalog(args: argparse.Namespace) -> None:
    entries = [destination.catalog_entry() for destination in registry.catalog().values()]
    if args.json:
        for entry in entries:
            print(orjson.dumps(entry).decode())
        return
    table = Table("type", "name", "category", "required settings", "description")
    for entry in entries:
        required = ", ".join(s["name"] for s in entry["settings"] if s["required"])
        table.add_row(entry["slug"], entry["name"], entry["category"], required, entry["description"])
    out.print(table)


def _setting_pairs(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--setting {pair!r} must look like KEY=VALUE")
        settings[key.strip()] = value
    return settings


def cmd_destination_add(args: argparse.Namespace) -> None:
    try:
        destination = registry.get(args.type)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from None
    try:
        settings = parse_settings(
            destination.Settings, _setting_pairs(args.setting), f"destination {args.name!r}"
        )
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    stored = {key: value for key, value in settings_to_json(settings).items() if value is not None}
    with _store(_config(args)) as store:
        source = store.get_source(args.source)
        config = store.create_destination(source.id, destination.slug, args.name, stored)
    out.print(f"destination {config.name!r} ({destination.name}) added to source {source.name!r} and enabled")


def _destination_json(store: Store, config: Any) -> dict[str, Any]:
    destination = registry.catalog().get(config.type)
    settings: Any = config.settings
    if destination is not None:
        settings = redacted(parse_settings(destination.Settings, config.settings, config.name))
    source_names = {source.id: source.name for source in store.list_sources()}
    return {
        "name": config.name,
        "type": config.type,
        "source": source_names.get(config.source_id),
        "enabled": config.enabled,
        "settings": settings,
        "filters": config.filters,
    }


def cmd_destination_list(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        rows = [_destination_json(store, config) for config in store.list_destinations()]
    if args.json:
        for row in rows:
            print(orjson.dumps(row).decode())
        return
    table = Table("name", "type", "source", "enabled")
    for row in rows:
        table.add_row(row["name"], row["type"], str(row["source"]), "on" if row["enabled"] else "off")
    out.print(table)


def cmd_destination_enable(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        store.update_destination(args.name, enabled=True)
    out.print(f"destination {args.name!r} enabled")


def cmd_destination_disable(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        store.update_destination(args.name, enabled=False)
    out.print(f"destination {args.name!r} disabled")


def cmd_destination_retry(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        config = store.get_destination(args.name)
        count = store.requeue_dead_letters(config.id)
    out.print(f"{count} dead letters of {args.name!r} queued for re-sending")


def destination_status(store: Store, name: str) -> dict[str, Any]:
    config = store.get_destination(name)
    totals = store.delivery_totals(config.id)
    state = store.worker_state(config.id)
    fresh = state is not None and now_ms() - state.updated_ms < 10_000
    position = store.get_position(config.consumer) or 0
    errors = store.recent_attempts(config.id, limit=5, failed_only=True)
    return {
        "delivered": totals.delivered,
        "retrying": state.retrying if fresh and state else 0,
        "failed": totals.failed,
        "filtered": totals.filtered,
        "lag": max(0, store.head() - position),
        "dead_letters": store.count_dead_letters(config.id),
        "last_errors": [
            {"at": format_ms(a.at_ms), "status": a.status, "reason": a.reason, "response": a.response[:500]}
            for a in errors
        ],
    }


def cmd_destination_status(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        status = destination_status(store, args.name)
    if args.json:
        print(orjson.dumps(status).decode())
        return
    out.print(
        f"{args.name}: delivered {status['delivered']}, retrying {status['retrying']}, failed {status['failed']}, "
        f"filtered {status['filtered']}, lag {status['lag']}, dead letters {status['dead_letters']}"
    )
    for error in status["last_errors"]:
        out.print(f"  {error['at']}  HTTP {error['status']}  {error['reason']}")


# -- admin -----------------------------------------------------------------------------
def cmd_admin_token(args: argparse.Namespace) -> None:
    with _store(_config(args)) as store:
        token = store.get_setting(ADMIN_TOKEN_SETTING)
        if token is None or args.rotate:
            token = new_admin_token()
            store.set_setting(ADMIN_TOKEN_SETTING, token)
    print(token)


if __name__ == "__main__":
    main()
