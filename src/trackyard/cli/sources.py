"""`trackyard source …`, `trackyard events` and `trackyard admin token`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from rich.table import Table

from trackyard.admin import service
from trackyard.cli.common import CommandError, open_store, out, print_json_line
from trackyard.spec import format_ms, parse_ms
from trackyard.store import Store, StoredEvent


def register(commands: Any) -> None:
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

    admin = commands.add_parser("admin", help="administration").add_subparsers(metavar="ACTION")
    token = admin.add_parser("token", help="print the admin API token")
    token.add_argument("--rotate", action="store_true", help="replace the token with a new one")
    token.set_defaults(handler=cmd_admin_token)


def cmd_source_create(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        source = service.create_source(store, args.name, args.write_key)
    print(source.write_key)


def cmd_source_list(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        sources = store.list_sources()
    if args.json:
        for source in sources:
            print_json_line(source.to_json())
        return
    table = Table("name", "slug", "write key", "created")
    for source in sources:
        table.add_row(source.name, source.slug, source.write_key, format_ms(source.created_ms))
    out.print(table)


def cmd_events(args: argparse.Namespace) -> None:
    since_ms = None
    if args.since:
        since_ms = parse_ms(args.since)
        if since_ms is None:
            raise CommandError(f"--since {args.since!r} is not an ISO-8601 date-time")
    if args.limit is not None and args.limit < 0:
        raise CommandError("--limit must be zero or more")
    with open_store(args) as store:
        names = {source.id: source.name for source in store.list_sources()}
        source_id = store.get_source(args.source).id if args.source else None
        if args.failed:
            _print_failures(store, names, source_id, since_ms, args)
        else:
            _print_events(store, names, source_id, since_ms, args)


def _print_events(
    store: Store, names: dict[int, str], source_id: int | None, since_ms: int | None, args: argparse.Namespace
) -> None:
    def read(after: int, limit: int) -> list[StoredEvent]:
        return store.read_log(after, limit, source_id, since_ms)

    for stored in _paged(read, args.limit):
        if args.json:
            print_json_line(stored.body)
        else:
            _print_event_line(stored, names)


def _print_failures(
    store: Store, names: dict[int, str], source_id: int | None, since_ms: int | None, args: argparse.Namespace
) -> None:
    limit = args.limit if args.limit is not None else 1_000_000
    for failure in store.read_failures(source_id, since_ms, limit=limit):
        record = {
            "source": names.get(failure.source_id),
            "receivedAt": format_ms(failure.received_ms),
            "code": failure.code,
            "reason": failure.reason,
            "event": orjson.loads(failure.body),
        }
        if args.json:
            print_json_line(record)
        else:
            out.print(
                f"{record['receivedAt']}  {record['source']}  [red]{failure.code}[/red]  {failure.reason}"
            )


def _paged(read: Callable[[int, int], list[StoredEvent]], limit: int | None) -> Iterator[StoredEvent]:
    """Read the log page by page so memory stays flat however long it is."""
    after, remaining = 0, limit
    while remaining is None or remaining > 0:
        page = read(after, 1000 if remaining is None else min(1000, remaining))
        if not page:
            return
        yield from page
        after = page[-1].seq
        if remaining is not None:
            remaining -= len(page)


def _print_event_line(stored: StoredEvent, names: dict[int, str]) -> None:
    event = stored.event()
    what = event.get("event") or event.get("name") or event.get("groupId") or ""
    who = event.get("userId") or event.get("anonymousId") or ""
    out.print(
        f"{stored.seq:>8}  {event['receivedAt']}  {names.get(stored.source_id, '?'):<12} "
        f"{event['type']:<8} {what!s:<24} {who}"
    )


def cmd_admin_token(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        token = service.admin_token(store, rotate=args.rotate)
    print(token)
