"""`trackyard background --child-of PID`: what `serve` runs as its child (see background.py).

Not listed in `trackyard --help`: it is started by `serve`, not by hand. `trackyard warehouse
run` is the command to load warehouses on their own.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from trackyard import background
from trackyard.archive.wiring import archive_writer
from trackyard.archive.writer import new_owner
from trackyard.cli.common import config_from, open_store
from trackyard.config import Config
from trackyard.store import Store
from trackyard.warehouse.runner import WarehouseRunner


def register(commands: Any) -> None:
    child = commands.add_parser("background")  # no help=: hidden from the command list
    child.add_argument("--child-of", type=int, required=True, help="the pid of the serving process")
    child.set_defaults(handler=cmd_background)


def cmd_background(args: argparse.Namespace) -> None:
    background.become_child_of(args.child_of)
    config = config_from(args)
    with open_store(args) as store:
        background.run_until_stopped(_roles(config, store), args.child_of)


ROLE = "background"


async def _roles(config: Config, store: Store) -> None:
    """Warehouse loading and archive writing side by side; cancelling this cancels both, and
    each finishes the batch or checkpoint it is in. The child heartbeats under the id that
    owns the archive lease, so `trackyard status` shows it with that lease."""
    process_id = new_owner()
    loader = WarehouseRunner(
        store, config.builtin_warehouse, config.warehouse_interval_s, config.warehouse_batch_events
    )
    every_s = max(0.5, config.lease_ttl_s / 5)
    await asyncio.gather(
        loader.run(),
        archive_writer(config, store, process_id).run(),  # hands its lease back when stopped
        background.heartbeat(store, process_id, ROLE, every_s),
    )
