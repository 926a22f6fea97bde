"""Driving a load generator in a separate process: ``wrk`` when installed,
else :mod:`benchmarks.http.load`. Both run a closed loop (each connection
sends its next request when the previous response arrived), so the two report
comparable numbers; wrk costs less CPU, which matters on a small machine where
the client shares the cores with the server and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: ``auto``: wrk if on PATH, else the Python client.
TOOLS = ("auto", "wrk", "python")
#: Marks the line wrk's Lua ``done()`` prints.
WRK_MARKER = "ASYNC_DB_WRK_RESULT"
#: wrk's own per-request timeout (its default, 2 s, would turn a slow tail
#: into errors).
WRK_TIMEOUT = "10s"


@dataclass(frozen=True)
class LoadSpec:
    """One load run: ``connections`` keep-alive connections for ``duration``
    seconds against ``path`` (``{id}`` replaced by a random id in 1..rows)."""

    host: str
    port: int
    method: str
    path: str
    rows: int
    connections: int
    duration: float
    seed: int
    #: Extra request headers (``"Cookie: sessionid=..."``), sent on every request.
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadResult:
    """What a load run measured. ``requests`` completed within the duration
    (any status); ``errors`` counts non-2xx responses, connection errors and
    timeouts."""

    tool: str
    requests: int
    errors: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps}


def resolve_tool(tool: str) -> str:
    """``wrk`` or ``python``; ``auto`` picks wrk when it is on PATH."""
    if tool not in TOOLS:
        raise ValueError(f"unknown load generator {tool!r}; choose from {TOOLS}")
    if tool == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if tool == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return tool


async def tool_version(tool: str) -> str:
    if tool == "python":
        return f"benchmarks.http.load (Python {sys.version.split()[0]})"
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    first = out.decode(errors="replace").strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


async def run_load(spec: LoadSpec, tool: str) -> LoadResult:
    """Run one load in a child process and return what it measured."""
    if tool == "wrk":
        return await _run_wrk(spec)
    return await _run_python(spec)


async def _output(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} exited with {proc.returncode}: {err.decode(errors='replace')}"
        )
    return out.decode(errors="replace")


async def _run_python(spec: LoadSpec) -> LoadResult:
    out = await _output(
        sys.executable,
        "-m",
        "benchmarks.http.load",
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--method",
        spec.method,
        "--path",
        spec.path,
        "--rows",
        str(spec.rows),
        "--connections",
        str(spec.connections),
        "--duration",
        str(spec.duration),
        "--seed",
        str(spec.seed),
        *(arg for header in spec.headers for arg in ("--header", header)),
    )
    data = json.loads(out.strip().splitlines()[-1])
    return LoadResult(
        tool="python",
        requests=int(data["requests"]),
        errors=int(data["errors"]),
        duration_s=float(data["duration_s"]),
        p50_ms=float(data["p50_ms"]),
        p99_ms=float(data["p99_ms"]),
        max_ms=float(data["max_ms"]),
    )


def wrk_script(spec: LoadSpec) -> str:
    """The Lua script: random ids, the method (POST with an empty body), and
    one machine-readable result line."""
    prefix, has_id, suffix = spec.path.partition("{id}")
    body = '""' if spec.method not in ("GET", "HEAD") else "nil"
    path = "prefix .. math.random(rows) .. suffix" if has_id else "prefix"
    headers = ", ".join(
        f"[{json.dumps(name.strip())}] = {json.dumps(value.strip())}"
        for name, _, value in (header.partition(":") for header in spec.headers)
    )
    return f"""
math.randomseed({int(spec.seed)})
local prefix, suffix, rows = {json.dumps(prefix)}, {json.dumps(suffix)}, {spec.rows}
local method, body = {json.dumps(spec.method)}, {body}
local headers = {{{headers}}}

request = function()
  return wrk.format(method, {path}, headers, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{WRK_MARKER} %d %d %d %d %d %d %d %.1f %.1f %.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


async def _run_wrk(spec: LoadSpec) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="async-db-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(wrk_script(spec))
        out = await _output(
            "wrk",
            "-t1",
            f"-c{spec.connections}",
            f"-d{max(1, math.ceil(spec.duration))}s",
            "--timeout",
            WRK_TIMEOUT,
            "-s",
            str(script),
            f"http://{spec.host}:{spec.port}",
        )
    line = next((row for row in out.splitlines() if row.startswith(WRK_MARKER)), None)
    if line is None:
        raise RuntimeError(f"no result line in wrk's output:\n{out}")
    fields = line.split()[1:]
    requests, duration_us, connect, read, write, status, timeout = map(int, fields[:7])
    p50_us, p99_us, max_us = map(float, fields[7:])
    return LoadResult(
        tool="wrk",
        requests=requests,
        errors=connect + read + write + status + timeout,
        duration_s=duration_us / 1e6,
        p50_ms=p50_us / 1000,
        p99_ms=p99_us / 1000,
        max_ms=max_us / 1000,
    )
