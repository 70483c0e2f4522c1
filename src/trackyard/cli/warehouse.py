"""`trackyard warehouse …`: add, list, sync and check the warehouses the log is loaded into."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.table import Table

from trackyard import background
from trackyard.cli.common import config_from, open_store, out, print_json_line
from trackyard.warehouse import service
from trackyard.warehouse.registry import SyncResult
from trackyard.warehouse.runner import WarehouseRunner


def register(commands: Any) -> None:
    parser = commands.add_parser("warehouse", help="load every event into SQL warehouses").add_subparsers(
        metavar="ACTION"
    )
    add = parser.add_parser("add", help="add a warehouse; it loads the whole log, then keeps up")
    add.add_argument("dialect", choices=["postgres", "duckdb"])
    add.add_argument("--name", required=True, help="a name for this warehouse")
    add.add_argument("--url", help="postgres: postgresql://user:password@host:port/database")
    add.add_argument("--path", help="duckdb: the database file")
    add.set_defaults(handler=cmd_add)
    listing = parser.add_parser("list", help="list warehouses")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    sync = parser.add_parser("sync", help="load everything pending, then exit")
    sync.add_argument("--name", help="only this warehouse (default: all)")
    sync.set_defaults(handler=cmd_sync)
    run = parser.add_parser(
        "run", help="keep every warehouse within TRACKYARD_WAREHOUSE_INTERVAL_S of the log until stopped"
    )
    run.set_defaults(handler=cmd_run)
    status = parser.add_parser("status", help="last sync, rows loaded, lag and last error of each warehouse")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)


def cmd_add(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        config = service.add_warehouse(store, args.dialect, args.name, url=args.url, path=args.path)
        target = service.describe(config)["target"]
    out.print(
        f"warehouse {config.name!r} ({config.dialect}, {target}) added: `trackyard serve` loads it "
        "from the start of the log; `trackyard warehouse sync` loads it now"
    )


def cmd_list(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        rows = service.list_warehouses(store, config_from(args).builtin_warehouse)
    if args.json:
        for row in rows:
            print_json_line(row)
        return
    table = Table("name", "dialect", "where")
    for row in rows:
        table.add_row(row["name"] + (" (built-in)" if row["builtin"] else ""), row["dialect"], row["target"])
    out.print(table)


def cmd_run(args: argparse.Namespace) -> None:
    """The loader on its own (`serve` runs the same in its background child)."""
    config = config_from(args)
    with open_store(args) as store:
        runner = WarehouseRunner(
            store, config.builtin_warehouse, config.warehouse_interval_s, config.warehouse_batch_events
        )
        background.run_until_stopped(runner.run(), None)


def cmd_sync(args: argparse.Namespace) -> None:
    config = config_from(args)

    def progress(result: SyncResult) -> None:
        out.print(
            f"  {result.name}: {result.events:,} events loaded, at {result.position:,} of {result.head:,}"
        )

    with open_store(args) as store:
        results = service.sync(
            store, config.builtin_warehouse, args.name, config.warehouse_batch_events, on_batch=progress
        )
    for result in results:
        if result.error:
            out.print(f"[red]{result.name}: failed:[/red] {result.error}")
        else:
            out.print(f"{result.name}: up to date ({result.events:,} events, {result.rows:,} rows loaded)")
        for warning in result.warnings:
            out.print(f"  [yellow]warning:[/yellow] {warning}")
    if any(result.error for result in results):
        sys.exit(1)


def cmd_status(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        rows = service.status(store, config_from(args).builtin_warehouse)
    if args.json:
        for row in rows:
            print_json_line(row)
        return
    table = Table("name", "dialect", "last sync", "events", "rows", "lag", "last error")
    for row in rows:
        error = row["last_error"] or ""
        if error:
            error = f"{'[red]' if row['failing'] else ''}{row['last_error_at']}: {error}"
        table.add_row(
            row["name"],
            row["dialect"],
            row["last_sync"] or "never",
            f"{row['events_loaded']:,}",
            f"{row['rows_loaded']:,}",
            f"{row['lag']:,}",
            error,
        )
    out.print(table)
