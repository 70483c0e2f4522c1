"""`trackyard replay …` and `trackyard archive verify`.

`trackyard replay` creates a job leased to itself and runs it in this process, with a
progress bar; if it is stopped, a running `trackyard serve` takes the job over once the
lease expires (`--detach` leaves the job to the server from the start), and
`trackyard replay resume ID` continues it here. The exit status is 0 when the replay ended
with every event delivered or filtered, 1 otherwise (failed events are in the dead letters).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from trackyard.archive import service
from trackyard.archive.replay import ReplayRun
from trackyard.archive.wiring import archive_storage
from trackyard.archive.writer import new_owner
from trackyard.cli.common import CommandError, config_from, open_store, out, print_json_line
from trackyard.config import Config
from trackyard.delivery.worker import WorkerOptions
from trackyard.store.archive import ReplayJob

PROGRESS_EVERY_S = 0.25


def register(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="send stored history to a destination",
        description="Replay a source's stored events (archive and log) into a destination.",
    )
    replay.add_argument("--destination", help="the destination to send to")
    replay.add_argument(
        "--since", help="events received at or after this ISO-8601 time (default: the beginning)"
    )
    replay.add_argument("--until", help="events received at or before this ISO-8601 time (default: now)")
    replay.add_argument("--source", help="the source whose events are sent (default: the destination's)")
    replay.add_argument(
        "--event", action="extend", nargs="+", default=[], metavar="NAME", help="only these events"
    )
    replay.add_argument(
        "--type", action="extend", nargs="+", default=[], metavar="TYPE", help="only these types"
    )
    replay.add_argument(
        "--rate", type=float, default=0.0, help="at most N events per second (default: no limit)"
    )
    replay.add_argument("--dry-run", action="store_true", help="count and translate, send nothing")
    replay.add_argument(
        "--detach", action="store_true", help="create the job for a running server and return"
    )
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    replay.set_defaults(handler=cmd_replay)
    actions = replay.add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", help="replay jobs, newest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    cancel = actions.add_parser("cancel", help="stop a replay")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(handler=cmd_cancel)
    resume = actions.add_parser("resume", help="continue an interrupted replay in this process")
    resume.add_argument("id", type=int)
    resume.add_argument("--json", action="store_true")
    resume.set_defaults(handler=cmd_resume)

    archive = commands.add_parser("archive", help="the archive of every event").add_subparsers(
        metavar="ACTION"
    )
    verify = archive.add_parser("verify", help="check every archive file and look for gaps")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=cmd_verify)


def _request(args: argparse.Namespace) -> service.ReplayRequest:
    if not args.destination:
        raise CommandError(
            "name the destination: trackyard replay --destination NAME (see `trackyard replay -h`)"
        )
    return service.ReplayRequest(
        destination=args.destination,
        since=args.since,
        until=args.until,
        source=args.source,
        events=args.event,
        types=args.type,
        rate=args.rate,
    )


def cmd_replay(args: argparse.Namespace) -> None:
    request = _request(args)
    config = config_from(args)
    if args.dry_run:
        with open_store(args) as store:
            _print_dry_run(service.dry_run(store, archive_storage(config), request), args.json)
        return
    owner = "" if args.detach else new_owner()
    with open_store(args) as store:
        job = service.create_replay(store, request, owner=owner, lease_s=config.replay_lease_s)
        if args.detach:
            _print_job(store, job, args.json, "created; a running `trackyard serve` runs it")
            return
    _run(args, config, job, owner)


def backfill(args: argparse.Namespace, destination: str, since: str) -> None:
    """`destination add --replay-since`: replay the destination's source from `since` at once."""
    config = config_from(args)
    owner = new_owner()
    request = service.ReplayRequest(destination=destination, since=since)
    with open_store(args) as store:
        job = service.create_replay(store, request, owner=owner, lease_s=config.replay_lease_s)
    _run(args, config, job, owner)


def cmd_resume(args: argparse.Namespace) -> None:
    config = config_from(args)
    with open_store(args) as store:
        job = store.get_replay_job(args.id)
    if not job.active:
        raise CommandError(f"replay {job.id} has already ended ({job.state})")
    _run(args, config, job, new_owner())


def _run(args: argparse.Namespace, config: Config, job: ReplayJob, owner: str) -> None:
    _collect_less_often()
    store = config.open_store()
    try:
        run = ReplayRun(
            store, archive_storage(config), job.id, owner, _worker_options(config), config.replay_lease_s
        )
        started = time.monotonic()
        try:
            ended = asyncio.run(_run_with_progress(run, job))
        except KeyboardInterrupt:
            out.print(
                f"replay {job.id} interrupted: `trackyard replay resume {job.id}` continues it "
                "(a running `trackyard serve` does so by itself)"
            )
            sys.exit(130)
        _print_job(
            store, ended, getattr(args, "json", False), f"{ended.state} in {time.monotonic() - started:.1f} s"
        )
    finally:
        store.close()
    if ended.state != "done" or ended.counts.failed:
        sys.exit(1)


def _collect_less_often() -> None:
    """A replay keeps up to 20,000 parsed events in flight; with the default thresholds the
    cyclic garbage collector rescans them so often that it takes a fifth of the CPU
    (bench/replay.py). This process does nothing else, so it collects less often."""
    gc.set_threshold(100_000, 50, 100)


def _worker_options(config: Config) -> WorkerOptions:
    return WorkerOptions(
        max_age_s=config.retry_max_age_s,
        backoff_base_s=config.retry_backoff_base_s,
        backoff_cap_s=config.retry_backoff_cap_s,
    )


async def _run_with_progress(run: ReplayRun, job: ReplayJob) -> ReplayJob:
    task = asyncio.create_task(run.run())
    with Progress(
        TextColumn(f"replay {job.id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeRemainingColumn(),
        console=out,
        disable=not out.is_terminal,
        transient=True,
    ) as progress:
        bar = progress.add_task("replay", total=max(job.total, 1), rate="-")
        last_read, last_at = job.counts.read, time.monotonic()
        while not task.done():
            await asyncio.wait({task}, timeout=PROGRESS_EVERY_S)
            counts = run.progress()
            if counts is None:
                continue
            now = time.monotonic()
            rate = (counts.read - last_read) / max(now - last_at, 1e-6)
            last_read, last_at = counts.read, now
            progress.update(bar, completed=min(counts.read, max(job.total, 1)), rate=f"{rate:,.0f}")
    return task.result()


def _print_job(store: Any, job: ReplayJob, as_json: bool, note: str) -> None:
    view = service.replay_view(store, job)
    if as_json:
        print_json_line(view)
        return
    out.print(
        f"replay {job.id} into {view['destination']!r} {note}: read {view['read']:,}, sent {view['sent']:,}, "
        f"delivered {view['delivered']:,}, failed {view['failed']:,}, filtered {view['filtered']:,}"
    )
    if job.error:
        out.print(f"  error: {job.error}")


def _print_dry_run(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json_line(result)
        return
    out.print(
        f"dry run into {result['destination']!r}: read {result['read']:,}, would send {result['sent']:,}, "
        f"filtered {result['filtered']:,}; nothing was sent"
    )
    table = Table("event", "count")
    for name, count in result["events"].items():
        table.add_row(name, f"{count:,}")
    out.print(table)
    for index, request in enumerate(result["requests"], start=1):
        out.print(f"[bold]request {index}[/bold]")
        out.print(request, markup=False)


def cmd_list(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        rows = service.list_replays(store)
    if args.json:
        for row in rows:
            print_json_line(row)
        return
    table = Table(
        "id", "destination", "source", "state", "since", "until", "read", "delivered", "failed", "total"
    )
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["destination"]),
            str(row["source"]),
            row["state"],
            row["since"] or "-",
            row["until"] or "-",
            f"{row['read']:,}",
            f"{row['delivered']:,}",
            f"{row['failed']:,}",
            f"{row['total']:,}",
        )
    out.print(table)


def cmd_cancel(args: argparse.Namespace) -> None:
    with open_store(args) as store:
        view = service.cancel_replay(store, args.id)
    out.print(f"replay {view['id']} cancelled after {view['read']:,} events read")


def cmd_verify(args: argparse.Namespace) -> None:
    config = config_from(args)
    with open_store(args) as store:
        report = service.verify_archive(store, archive_storage(config))
    if args.json:
        print_json_line(report)
    else:
        out.print(
            f"archive {report['location']}: {report['files']:,} files, {report['events']:,} events, "
            f"{report['bytes']:,} bytes; archived up to seq {report['archive_position']:,}, "
            f"the log holds seq {report['log_from']:,}-{report['head']:,}"
        )
        for line in (*report["problems"], *report["gaps"]):
            out.print(f"  [red]problem[/red] {line}")
        for key in report["unlisted"]:
            out.print(
                f"  [yellow]unlisted[/yellow] {key} (left by an interrupted writer; removed when it restarts)"
            )
        out.print("[green]ok[/green]" if report["ok"] else "[red]the archive has problems[/red]")
    if not report["ok"]:
        sys.exit(1)
