"""End to end: the example Django site under uvicorn, over real HTTP, on the
real database. Each request's connections are released when it ends (also when
the client disconnects mid-request), 500 requests on a 5-connection pool
neither hang nor leak, and Django's signals and middleware need no change."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from benchmarks.http.site.schema import create_statements, drop_statement
from tests.fix_db import our_backends

APP_NAME = "async-db-e2e"
TABLE = f"async_db_e2e_item_{os.getpid()}"
POOL_SIZE = 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def site(dsn: str) -> Iterator[str]:
    """The site, served by uvicorn in a subprocess; stopped (SIGINT) after."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(drop_statement(TABLE))
        for statement in create_statements(TABLE, rows=100):
            conn.execute(statement)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "ASYNC_DB_SITE_DSN": dsn,
        "ASYNC_DB_SITE_APP_NAME": APP_NAME,
        "ASYNC_DB_SITE_POOL_SIZE": str(POOL_SIZE),
        "ASYNC_DB_SITE_ITEM_TABLE": TABLE,
        "ASYNC_DB_SITE_MIDDLEWARE": "1",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.http.site.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "on",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"127.0.0.1:{port}"
    try:
        _wait_until_up(port, server)
        yield base
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
        with psycopg.connect(dsn, autocommit=True) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [APP_NAME],
            ).fetchone()
            conn.execute(drop_statement(TABLE))
        assert server.returncode == 0, output.decode(errors="replace")
        # A clean shutdown closes the pool: nothing left on the server.
        assert left == (0,)


def _wait_until_up(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(server.stdout.read().decode() if server.stdout else "")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the site did not start")


async def get(base: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET (Connection: close) with asyncio streams."""
    host, port = base.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, v in (line.split(":", 1) for line in lines[1:])
    }
    return status, headers, body


def site_backends(observer: Any) -> list[tuple[int, str]]:
    return our_backends(observer, APP_NAME)


async def settled_backends(observer: Any) -> list[str]:
    """The site's backend states once none is busy (bounded wait)."""
    deadline = time.monotonic() + 10
    while True:
        states = [state for _, state in site_backends(observer)]
        if all(state == "idle" for state in states) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.02)


async def test_each_request_releases_its_connection(site: str, observer: Any) -> None:
    for pk in range(1, 21):
        status, headers, body = await get(site, f"/items/{pk}/async-db/")
        assert status == 200
        assert json.loads(body)["id"] == pk
        # Django's middleware ran unchanged.
        assert headers["x-content-type-options"] == "nosniff"
    states = await settled_backends(observer)
    # Every connection is back in the pool: idle, none in a transaction.
    assert states and all(state == "idle" for state in states), states
    assert len(states) <= POOL_SIZE


async def test_signals_fire_as_usual(site: str) -> None:
    _, _, before = await get(site, "/health/")
    await get(site, "/items/1/async-db/")
    _, _, after = await get(site, "/health/")
    started = json.loads(after)["signals"]["request_started"]
    finished = json.loads(after)["signals"]["request_finished"]
    assert started - json.loads(before)["signals"]["request_started"] == 2
    assert finished >= json.loads(before)["signals"]["request_finished"] + 1


async def test_500_requests_on_a_5_connection_pool(site: str, observer: Any) -> None:
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(site_backends(observer)))
            await asyncio.sleep(0.01)

    semaphore = asyncio.Semaphore(50)

    async def one(i: int) -> int:
        async with semaphore:
            status, _, _ = await get(site, f"/items/{i % 100 + 1}/async-db/")
            return status

    watcher = asyncio.create_task(watch())
    try:
        async with asyncio.timeout(180):
            statuses = await asyncio.gather(*(one(i) for i in range(500)))
    finally:
        done.set()
        await watcher
    assert statuses == [200] * 500
    assert peak <= POOL_SIZE
    states = await settled_backends(observer)
    assert all(state == "idle" for state in states), states


async def test_client_disconnect_cancels_the_view(site: str, observer: Any) -> None:
    host, port = site.split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /slow/?seconds=30 HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()

    def sleeping() -> int:
        row = observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'",
            [APP_NAME],
        ).fetchone()
        return int(row[0])

    async with asyncio.timeout(10):
        # Polling the server: the query runs there.
        while True:
            if sleeping():
                break
            await asyncio.sleep(0.02)
    writer.close()  # the client goes away mid-request
    await writer.wait_closed()
    # Django cancels the view; psycopg cancels the query on the server; the
    # connection goes back to the pool.
    async with asyncio.timeout(10):
        while True:
            if not sleeping():
                break
            await asyncio.sleep(0.02)
    states = await settled_backends(observer)
    assert all(state == "idle" for state in states), states
    status, _, _ = await get(site, "/items/1/async-db/")
    assert status == 200


async def test_websocket_consumer_over_a_real_server(site: str, observer: Any) -> None:
    """A real WebSocket client, the Channels consumer under uvicorn: the
    consumer's connection is returned between messages and on disconnect."""
    import websockets

    async with websockets.connect(f"ws://{site}/ws/items/") as socket_:
        for pk in (1, 2, 3):
            await socket_.send(json.dumps({"id": pk}))
            reply = json.loads(await socket_.recv())
            assert reply["item"]["id"] == pk
            # Between messages nothing of ours is in a query or a transaction.
            states = await settled_backends(observer)
            assert all(state == "idle" for state in states), states
    states = await settled_backends(observer)
    assert all(state == "idle" for state in states), states
    assert len(states) <= POOL_SIZE
