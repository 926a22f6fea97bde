"""A small HTTP/1.1 load generator: ``python -m benchmarks.http.load``.

The fallback when ``wrk`` is not installed, run in a process of its own (never
in the benchmark's or the server's). ``--connections`` keep-alive connections,
each sending one request at a time (closed loop, like wrk), for ``--duration``
seconds; the path of every request is ``--path`` with ``{id}`` replaced by a
random item id in ``1..--rows`` (seeded by ``--seed``). Prints one JSON object:
the requests that completed within the duration, errors (non-2xx status,
connection errors, timeouts), and latency percentiles in milliseconds.

Plain asyncio streams, no dependency. Requests in flight when the duration
ends are finished (so the server sees no disconnect mid-request) but not
counted. Loopback (or any literal host) only: no TLS, no redirects, no proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: A request that takes longer than this is a timeout error.
REQUEST_TIMEOUT = 10.0


@dataclass
class Tally:
    """What the workers recorded (one event loop: no locking)."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """Read one response; return its status, whether the connection stays
    open, and its body. Handles ``Content-Length`` and chunked bodies."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {status_line!r}")
    status = int(parts[1])
    headers: dict[bytes, bytes] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    keep_alive = headers.get(b"connection") != b"close"
    body = b""
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                # Trailers, up to the empty line.
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            chunks.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(chunks)
    elif status not in (204, 304) and not 100 <= status < 200:
        body = await reader.read()  # delimited by the end of the connection
        keep_alive = False
    return status, keep_alive, body


def request_bytes(
    method: str, path: str, host: str, port: int, headers: Sequence[str] = ()
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
    if method not in ("GET", "HEAD"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


async def worker(
    args: argparse.Namespace,
    rng: random.Random,
    deadline_ns: int,
    tally: Tally,
) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.perf_counter_ns() < deadline_ns:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(args.host, args.port)
                except OSError:
                    tally.error("connect")
                    await asyncio.sleep(0.05)
                    continue
            assert reader is not None
            path = args.path.replace("{id}", str(rng.randint(1, args.rows)))
            sent_ns = time.perf_counter_ns()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    writer.write(
                        request_bytes(
                            args.method, path, args.host, args.port, args.header
                        )
                    )
                    status, keep_alive, _ = await read_response(reader)
            except TimeoutError:
                tally.error("timeout")
                status, keep_alive = 0, False
            except (OSError, asyncio.IncompleteReadError, ValueError, ProtocolError):
                tally.error("read")
                status, keep_alive = 0, False
            done_ns = time.perf_counter_ns()
            if done_ns <= deadline_ns and status:
                if 200 <= status < 300:
                    tally.latencies_ns.append(done_ns - sent_ns)
                else:
                    tally.error(f"status {status}")
            if not keep_alive:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


def percentile(sorted_values: Sequence[int], pct: float) -> float:
    """Nearest-rank percentile (0 when there are no values)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summary(tally: Tally, duration_s: float) -> dict[str, Any]:
    latencies = sorted(tally.latencies_ns)
    errors = sum(tally.errors.values())
    completed = len(latencies) + sum(
        n for kind, n in tally.errors.items() if kind.startswith("status")
    )
    return {
        "tool": "python",
        "requests": completed,
        "errors": errors,
        "error_kinds": tally.errors,
        "duration_s": duration_s,
        "p50_ms": percentile(latencies, 50) / 1e6,
        "p99_ms": percentile(latencies, 99) / 1e6,
        "max_ms": (latencies[-1] / 1e6) if latencies else 0.0,
    }


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    master = random.Random(args.seed)
    deadline_ns = time.perf_counter_ns() + int(args.duration * 1e9)
    async with asyncio.TaskGroup() as group:
        for _ in range(args.connections):
            rng = random.Random(master.getrandbits(64))
            group.create_task(worker(args, rng, deadline_ns, tally))
    return summary(tally, args.duration)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", required=True, help="path; {id} is replaced")
    parser.add_argument("--rows", type=int, default=1, help="ids are 1..ROWS")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        help="an extra request header, 'Name: value' (repeatable), e.g. a Cookie",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(json.dumps(asyncio.run(generate(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
