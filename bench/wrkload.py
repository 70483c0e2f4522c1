"""Closed-loop load with wrk: a generated Lua script gives every event a unique messageId.

wrk (C, one thread) drives the server far harder than a Python client could on the same
two cores; limits.md measured the ceilings with `wrk -t1 -c32`. The Lua `request()` builds
each body from the event templates, `response()` stops the thread after a request
bound, and `done()` prints the summary as JSON.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from payload import ID_WIDTH, Template, batch_envelope

WRK_TIMEOUT = "10s"

_LUA = """
local templates = {
%(templates)s
}
local head, tail = %(head)s, %(tail)s
local per_request = %(per_request)d
local limit = %(limit)d
local id_format = "%(tag)s-%%0%(digits)dd"
local path = "%(path)s"
local counter = 0
local responses = 0
local statuses = {}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "%(authorization)s"

local function event()
  counter = counter + 1
  local t = templates[(counter %% #templates) + 1]
  return t[1] .. string.format(id_format, counter) .. t[2]
end

function request()
  local body
  if per_request == 0 then
    body = event()
  else
    local parts = {}
    for i = 1, per_request do parts[i] = event() end
    body = head .. table.concat(parts, ",") .. tail
  end
  return wrk.format(nil, path, nil, body)
end

function response(status, headers, body)
  responses = responses + 1
  if responses >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n@@RESULT {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class ClosedLoopResult:
    requests: int  # answered with 2xx
    errors: int  # non-2xx, connect, read, write and timeout errors
    duration_s: float
    p50_ms: float
    p99_ms: float
    cpu_s: float  # the load generator's own CPU time


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_string(value: bytes) -> str:
    text = value.decode()
    if "]==]" in text:
        raise ValueError("a template holds the Lua long-bracket terminator")
    return f"[==[{text}]==]"


def lua_script(
    parts: list[Template], path: str, authorization: str, tag: str, per_request: int, limit: int
) -> str:
    head, tail = batch_envelope()
    rows = ",\n".join(f"  {{{_lua_string(t.prefix)}, {_lua_string(t.suffix)}}}" for t in parts)
    return _LUA % {
        "templates": rows,
        "head": _lua_string(head),
        "tail": _lua_string(tail),
        "per_request": per_request,
        "limit": limit,
        "tag": tag,
        "digits": ID_WIDTH - len(tag) - 1,
        "path": path,
        "authorization": authorization,
    }


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    seconds: float,
    track: list[subprocess.Popen[bytes]],
) -> ClosedLoopResult:
    """Run wrk to completion; its PID is in `track` while it runs so the caller can stop it."""
    command = [
        wrk_path() or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(script),
        url,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    track.append(process)
    try:
        output, cpu_s = _wait_with_rusage(process, timeout=seconds + 30)
    finally:
        track.remove(process)
    return _parse(output, cpu_s)


def _wait_with_rusage(process: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, float]:
    """Wait for wrk and return its output and CPU time; kill it if it overruns `timeout`."""
    assert process.stdout is not None
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        output = process.stdout.read()  # wrk ends on its own after -d; EOF comes with its exit
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        watchdog.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}:\n{output.decode(errors='replace')}")
    return output, usage.ru_utime + usage.ru_stime


def _parse(output: bytes, cpu_s: float) -> ClosedLoopResult:
    marker = b"@@RESULT "
    line = next((line for line in output.splitlines() if line.startswith(marker)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{output.decode(errors='replace')}")
    data = orjson.loads(line[len(marker) :])
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    return ClosedLoopResult(
        requests=data["requests"] - data["status"],
        errors=errors,
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu_s=cpu_s,
    )
