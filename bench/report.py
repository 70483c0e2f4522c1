"""Summaries of the ingest benchmark: medians over repetitions, target checks, Markdown tables."""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import sqlite3
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import Any

import hotspots

TARGETS = {
    "batch_sqlite_events_per_s": 50_000,
    "batch_postgres_events_per_s": 25_000,
    "single_requests_per_s": 8_000,
    "half_rate_p99_ms": 100,
    "rss_mb": 250,
}


def percentile(ordered: list[int] | list[float], p: float) -> float:
    if not ordered:
        return math.nan
    index = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return float(ordered[index])


def _median_record(records: list[Any]) -> dict[str, float] | None:
    """Field-by-field median of dataclass records."""
    if not records:
        return None
    return {f.name: median(getattr(r, f.name) for r in records) for f in fields(records[0])}


def _row(outcomes: list[Any], floor_by_rep: dict[int, float]) -> dict[str, Any]:
    done = [o for o in outcomes if o.error is None and o.peak is not None]
    ratios = [o.peak.events_per_s / floor_by_rep[o.rep] for o in done if floor_by_rep.get(o.rep)]
    halves = [o.half for o in done if o.half is not None]
    return {
        "reps": len(done),
        "errors": [o.error for o in outcomes if o.error],
        "peak": _median_record([o.peak for o in done]),
        "half": _median_record(halves),
        "peak_rss_mb": median(o.peak_rss_mb for o in done) if done else None,
        "children_peak_rss_mb": _median_of(done, "children_peak_rss_mb"),
        "ratio_to_floor": median(ratios) if ratios else None,
        "dedupe_ok": all(o.dedupe_ok for o in done) if any(o.dedupe_ok is not None for o in done) else None,
        "durable_unique": _durable_unique(done),
        "rss_growth_bytes_per_event": _median_of(done, "rss_growth_bytes_per_event"),
    }


def _median_of(done: list[Any], name: str) -> float | None:
    values = [getattr(o, name) for o in done if getattr(o, name) is not None]
    return median(values) if values else None


def _durable_unique(done: list[Any]) -> bool | None:
    """Every acknowledged event is stored, and no messageId is stored twice."""
    stored = [o for o in done if o.stored_total is not None]
    if not stored:
        return None
    return all(
        o.peak.stored_events >= o.peak.acked_events
        and o.half is not None
        and o.half.stored_events >= o.half.acked_events
        and o.distinct_total == o.stored_total
        for o in stored
    )


def summarise(outcomes: list[Any], target_names: list[str]) -> dict[str, Any]:
    rows = []
    for scenario in dict.fromkeys(o.scenario for o in outcomes):
        floor = {
            o.rep: o.peak.events_per_s
            for o in outcomes
            if o.scenario == scenario and o.target.startswith("floor") and o.peak is not None
        }
        for target in target_names:
            group = [o for o in outcomes if o.scenario == scenario and o.target == target]
            if group:
                rows.append({"scenario": scenario, "target": target, **_row(group, floor)})
    return {"rows": rows, "checks": checks(rows)}


def _find(rows: list[dict[str, Any]], scenario: str, kind: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == scenario and r["target"] == f"trackyard {kind}"), None)


def _check(what: str, wanted: str, row: dict[str, Any] | None, value: float | None, ok: bool) -> dict:
    if row is None:
        return {"what": what, "wanted": wanted, "measured": "not run", "met": None}
    if value is None:
        return {
            "what": what,
            "wanted": wanted,
            "measured": "; ".join(row["errors"]) or "failed",
            "met": False,
        }
    return {"what": what, "wanted": wanted, "measured": value, "met": ok}


def checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for kind, key in (("sqlite", "batch_sqlite_events_per_s"), ("postgres", "batch_postgres_events_per_s")):
        row = _find(rows, "batch", kind)
        value = row["peak"]["events_per_s"] if row and row["peak"] else None
        wanted = f"≥ {TARGETS[key]:,} events/s"
        result.append(_check(f"batch ingest, {kind}", wanted, row, value, (value or 0) >= TARGETS[key]))
    for kind in ("sqlite", "postgres"):
        row = _find(rows, "single", kind)
        value = row["peak"]["requests_per_s"] if row and row["peak"] else None
        limit = TARGETS["single_requests_per_s"]
        result.append(
            _check(f"single /v1/t, {kind}", f"≥ {limit:,} req/s", row, value, (value or 0) >= limit)
        )
    for kind in ("sqlite", "postgres"):
        for scenario in ("batch", "single"):
            row = _find(rows, scenario, kind)
            value = row["half"]["p99_ms"] if row and row["half"] else None
            limit = TARGETS["half_rate_p99_ms"]
            what = f"p99 at half the peak rate, {scenario}, {kind}"
            result.append(_check(what, f"< {limit} ms", row, value, value is not None and value < limit))
        found = [r for r in rows if r["target"] == f"trackyard {kind}"]
        values = [r["peak_rss_mb"] for r in found if r["peak_rss_mb"] is not None]
        value = max(values) if values else None
        limit = TARGETS["rss_mb"]
        row = found[0] if found else None
        result.append(_check(f"peak RSS, {kind}", f"< {limit} MB", row, value, (value or 1e9) < limit))
    return [c for c in result if c["measured"] != "not run"]


# -- metadata ----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _wrk_version() -> str:
    try:
        output = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "missing"
    return output.split("Copyright")[0].strip() or "unknown"


def _source_state() -> str:
    """The commit measured, and a digest of src/ when it has uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
        return result.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    if not git("status", "--porcelain", "--", "src"):
        return head
    digest = hashlib.sha256()
    for path in sorted((repo / "src").rglob("*.py")):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{head} + uncommitted src/ changes (sha256 of src/**/*.py {digest.hexdigest()[:12]})"


def metadata(args: argparse.Namespace, started: float, idle_busy_cores: float) -> dict[str, Any]:
    return {
        "source": _source_state(),
        "busy_cores_before_start": idle_busy_cores,
        "date": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "uvicorn": version("uvicorn"),
        "wrk": _wrk_version(),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "reps": args.reps,
        "server_env": dict(args.env),
    }


# -- rendering -----------------------------------------------------------------------------
def number(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def markdown_table(header: list[str], lines: list[list[str]], left: int = 2) -> str:
    """A Markdown table whose first `left` columns are aligned left, the others (numbers) right."""
    align = ["---" if i < left else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def _peak_line(row: dict[str, Any]) -> list[str]:
    p = row["peak"]
    if p is None:
        return [row["scenario"], row["target"], "failed: " + "; ".join(row["errors"])[:200], *["–"] * 14]
    return [
        row["scenario"],
        row["target"],
        number(p["events_per_s"]),
        number(p["requests_per_s"]),
        number(p["p50_ms"], 2),
        number(p["p99_ms"], 2),
        number(row["peak_rss_mb"], 0),
        number(row.get("children_peak_rss_mb"), 0),
        number(p["server_us_per_req"], 0),
        number(p["server_us_per_event"], 1),
        number(p["server_cores"], 2),
        number(p.get("helper_cores", 0.0), 2),
        number(p["loop_thread_cores"], 2),
        number(p["postgres_cores"], 2) if row["target"].endswith("postgres") else "–",
        number(p["loadgen_cores"], 2),
        number(p["host_cores"], 2),
        number(p["host_cores"] - p["server_cores"] - p["postgres_cores"] - p["loadgen_cores"], 2),
        _ratio(row),
    ]


def _ratio(row: dict[str, Any]) -> str:
    if row["target"].startswith("floor"):
        return "1"
    return number(row["ratio_to_floor"], 3)


def _half_line(row: dict[str, Any]) -> list[str]:
    h = row["half"]
    return [
        row["scenario"],
        row["target"],
        number(h["offered_rps"]),
        number(h["achieved_rps"]),
        number(h["events_per_s"]),
        number(h["p50_ms"], 2),
        number(h["p99_ms"], 2),
        number(h["failed"]),
        number(h["loadgen_cores"], 2),
    ]


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "–"}[met]


def _check_line(check: dict[str, Any]) -> list[str]:
    measured = check["measured"]
    shown = number(measured, 1 if "ms" in check["wanted"] else 0) if isinstance(measured, float) else measured
    return [check["what"], check["wanted"], shown, _verdict(check["met"])]


def _integrity_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if row["durable_unique"] is None:
            continue
        lines.append(
            f"- {row['scenario']} × {row['target']}: every acknowledged event stored and no messageId stored "
            f"twice: {_verdict(row['durable_unique'])}; re-sent messageIds dropped: {_verdict(row['dedupe_ok'])}; "
            f"RSS growth {number(row['rss_growth_bytes_per_event'])} bytes per stored event"
        )
    return lines


def render(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    peak_header = [
        "scenario",
        "server",
        "events/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "peak RSS MB",
        "background RSS MB",
    ]
    peak_header += ["server µs/req", "server µs/event", "server cores", "of which parsers and writer"]
    peak_header += ["loop thread cores", "PG cores"]
    peak_header += ["wrk cores"]
    peak_header += ["host busy cores", "other cores", "ratio to floor"]
    half_header = ["scenario", "server", "offered req/s", "achieved req/s", "events/s", "p50 ms", "p99 ms"]
    half_header += ["failed", "loadgen cores"]
    half_rows = [_half_line(r) for r in rows if r["half"] is not None]
    parts = [
        f"trackyard ingest benchmark, {meta['date']}: {meta['cpus']} vCPU {meta['cpu_model']}, "
        f"Python {meta['python']}, SQLite {meta['sqlite']}, uvicorn {meta['uvicorn']}, {meta['wrk']}",
        f"phases of {meta['seconds']:g} s after {meta['warmup']:g} s of warm-up; "
        f"{meta['reps']} rep(s), medians; peak = closed loop, wrk -t1 -c32",
        f"source: {meta['source']}; busy cores before the start: {meta['busy_cores_before_start']:.2f}"
        + (f"; server environment {meta['server_env']}" if meta.get("server_env") else ""),
        "",
        "Peak (closed loop):",
        "",
        markdown_table(peak_header, [_peak_line(r) for r in rows]),
        "",
        "Half the peak rate (open loop, latency from each request's due time):",
        "",
        markdown_table(half_header, half_rows) if half_rows else "(not run)",
        "",
        "Integrity:",
        "",
        *(_integrity_lines(rows) or ["(not run)"]),
        "",
        "Targets:",
        "",
        markdown_table(["target", "wanted", "measured", "met"], [_check_line(c) for c in summary["checks"]]),
    ]
    return "\n".join(parts)


def hotspot_text(path: os.PathLike[str] | str, thread_cores: dict[str, float]) -> str:
    profile = hotspots.load(path)
    return hotspots.render(profile) + "\n\n" + hotspots.render_threads(profile, thread_cores)
