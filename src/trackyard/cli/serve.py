"""`trackyard serve`."""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trackyard import __version__
from trackyard.admin.service import FirstStart, bootstrap
from trackyard.app import Runtime, build_app
from trackyard.cli.common import CommandError, config_from, out
from trackyard.config import Config
from trackyard.ingest.children import tune_garbage_collector


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the collection API and every background role")
    serve.add_argument(
        "--data-dir", type=Path, help="data directory (default: $TRACKYARD_DATA_DIR or ./trackyard-data)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8088)
    serve.add_argument(
        "--role",
        choices=("all", "ingest", "worker"),
        default="all",
        help="all (default); ingest: the collection API only; worker: delivery, warehouse, archive, replays",
    )
    serve.add_argument(
        "--admin",
        action="store_true",
        help="also serve the web app and admin API (always on with --role all)",
    )
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    logging.basicConfig(
        level=os.environ.get("TRACKYARD_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = config_from(
        args, host=args.host, port=args.port, role=args.role, admin=args.role == "all" or args.admin
    )
    if args.role != "all" and not config.uses_postgres:
        raise CommandError(
            f"--role {args.role} needs TRACKYARD_DATABASE_URL=postgresql://…: the embedded SQLite store "
            "is one process, so ingest and workers cannot run apart"
        )
    config.data_dir.mkdir(parents=True, exist_ok=True)
    _limit_malloc_arenas()
    with _single_server_lock(config):
        store = config.open_store()
        first = bootstrap(store)
        _print_banner(config, first)
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
        tune_garbage_collector()
        server.run()


M_ARENA_MAX = -8  # glibc's mallopt parameter


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate their own malloc arenas (up to 8 per core), each
    keeping freed memory resident: the committer, archive, warehouse and delivery threads.
    Two arenas: peak RSS 213 against 269 MB in a pair of bench/ingest.py runs without the
    warehouse. Called before any thread starts."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    libc.mallopt(M_ARENA_MAX, arenas)


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


def _print_banner(config: Config, first: FirstStart) -> None:
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
