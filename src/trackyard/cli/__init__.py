"""The `trackyard` command. Every subcommand but `serve` works with or without a running server.

Each module of this package registers its subcommands; add a module to COMMANDS to add some.
"""

from __future__ import annotations

import argparse
import sys

from trackyard import __version__
from trackyard.admin.service import ServiceError
from trackyard.cli import archive, background, destinations, serve, sources, status, warehouse
from trackyard.cli.common import CommandError, err
from trackyard.store import StoreError

COMMANDS = (serve, sources, destinations, archive, status, warehouse, background)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        sys.exit(2)
    try:
        args.handler(args)
    except (CommandError, ServiceError, StoreError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackyard", description="Self-hosted, Segment-compatible CDP.")
    parser.add_argument("--version", action="version", version=f"trackyard {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return parser
