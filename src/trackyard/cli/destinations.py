"""`trackyard destination …`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from trackyard.admin import service
from trackyard.cli import archive
from trackyard.cli.common import CommandError, open_store, out, print_json_line

FILTER_FLAGS = {
    "allow-type": "only these call types (track, identify, page, screen, group, alias)",
    "block-type": "never these call types",
    "allow-event": "only these track event names",
    "block-event": "never these track event names",
}


def filters_from(args: argparse.Namespace) -> dict[str, list[str]]:
    return {flag.replace("-", "_") + "s": getattr(args, flag.replace("-", "_")) for flag in FILTER_FLAGS}


def register(commands: Any) -> None:
    parser = commands.add_parser("destination", help="manage destinations").add_subparsers(metavar="ACTION")
    catalog = parser.add_parser("catalog", help="every installed destination type and its settings")
    catalog.add_argument("--json", action="store_true")
    catalog.set_defaults(handler=cmd_catalog)
    add = parser.add_parser("add", help="add a destination to a source (enabled at once)")
    add.add_argument("source", help="source name")
    add.add_argument("type", help="destination type (see `trackyard destination catalog`)")
    add.add_argument("--name", required=True, help="a name for this destination")
    add.add_argument(
        "--setting", action="append", default=[], metavar="KEY=VALUE", help="a setting; repeatable"
    )
    add.add_argument(
        "--replay-since", metavar="ISO8601", help="backfill: replay stored events received since then"
    )
    for flag, what in FILTER_FLAGS.items():
        add.add_argument(f"--{flag}", action="append", default=[], metavar="NAME", help=f"{what}; repeatable")
    add.set_defaults(handler=cmd_add)
    listing = parser.add_parser("list", help="list destinations")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    for action, handler in (("enable", cmd_enable), ("disable", cmd_disable)):
        sub = parser.add_parser(action, help=f"{action} a destination")
        sub.add_argument("name")
        sub.set_defaults(handler=handler)
    retry = parser.add_parser("retry", help="re-send a destination's dead letters")
    retry.add_argument("name")
    retry.set_defaults(handler=cmd_retry)
    status = parser.add_parser("status", help="delivery counts, lag and last errors of a destination")
    status.add_argument("name")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)


def cmd_catalog(args: argparse.Namespace) -> None:
    entries = service.catalog()
    if args.json:
        for entry in entries:
            print_json_line(entry)
        return
    table = Table("type", "name", "category", "required settings", "description")
    for entry in entries:
        required = ", ".join(s["name"] for s in entry["settings"] if s["required"])
        table.add_row(entry["slug"], entry["name"], entry["category"], required, entry["description"])
    out.print(table)


def setting_pairs(pairs: list[str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--setting {pair!r} must look like KEY=VALUE")
        settings[key.strip()] = value
    return settings


def cmd_add(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        config = service.add_destination(
            store, args.source, args.type, args.name, setting_pairs(args.setting), filters_from(args)
        )
    out.print(f"destination {config.name!r} ({config.type}) added to source {args.source!r} and enabled")
    if args.replay_since:
        archive.backfill(args, config.name, args.replay_since)


def cmd_list(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        rows = service.list_destinations(store)
    if args.json:
        for row in rows:
            print_json_line(row)
        return
    table = Table("name", "type", "source", "enabled")
    for row in rows:
        table.add_row(row["name"], row["type"], str(row["source"]), "on" if row["enabled"] else "off")
    out.print(table)


def cmd_enable(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        service.update_destination(store, args.name, enabled=True)
    out.print(f"destination {args.name!r} enabled")


def cmd_disable(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        service.update_destination(store, args.name, enabled=False)
    out.print(f"destination {args.name!r} disabled")


def cmd_retry(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        count = service.retry_dead_letters(store, args.name)
    out.print(f"{count} dead letters of {args.name!r} queued for re-sending")


def cmd_status(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        status = service.destination_status(store, args.name)
    if args.json:
        print_json_line(status)
        return
    out.print(
        f"{args.name}: delivered {status['delivered']}, retrying {status['retrying']}, failed {status['failed']}, "
        f"filtered {status['filtered']}, lag {status['lag']}, dead letters {status['dead_letters']}"
    )
    for error in status["last_errors"]:
        out.print(f"  {error['at']}  HTTP {error['status']}  {error['reason']}")
