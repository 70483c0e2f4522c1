"""What every `trackyard` command shares: consoles, configuration, the store, errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from rich.console import Console

from trackyard.config import Config
from trackyard.store import Store

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class CommandError(Exception):
    """A user mistake: printed without a traceback, exit status 2."""


def config_from(args: argparse.Namespace, **overrides: Any) -> Config:
    return Config.from_env(data_dir=getattr(args, "data_dir", None), **overrides)


@contextmanager
def open_store(args: argparse.Namespace) -> Iterator[Store]:
    store = config_from(args).open_store()
    try:
        yield store
    finally:
        store.close()


def print_json_line(value: Any) -> None:
    data = value if isinstance(value, bytes) else orjson.dumps(value)
    sys.stdout.write(data.decode() + "\n")
