"""`trackyard status`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from trackyard.admin.status import cluster_status
from trackyard.cli.common import open_store, out, print_json_line


def register(commands: Any) -> None:
    status = commands.add_parser("status", help="live processes, their leases, and the lag of every consumer")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)


def cmd_status(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        status = cluster_status(store)
    if args.json:
        print_json_line(status)
        return
    processes = Table("role", "host", "pid", "heartbeat age (s)", "leases", title="processes")
    for p in status["processes"]:
        processes.add_row(
            p["role"], p["host"], str(p["pid"]), str(p["heartbeat_age_s"]), ", ".join(p["leases"])
        )
    consumers = Table(
        "consumer", "position", "lag", "oldest unprocessed (s)", title=f"log head {status['head']}"
    )
    for c in status["consumers"]:
        consumers.add_row(
            c["consumer"], str(c["position"]), str(c["lag"]), str(c["oldest_unprocessed_age_s"])
        )
    out.print(processes)
    out.print(consumers)
