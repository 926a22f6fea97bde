"""A deadline against a server that stops answering (issue 10, item 5).

``asyncio.timeout`` cancels the query on the client at once, but psycopg then
tries to cancel it on the server (a new connection, up to 5 s) and waits for
the query to end (up to 5 s more) before it gives up and closes the
connection. ``docs/reliability.rst`` documents that bound; these tests hold it,
through a loopback proxy that can stop forwarding (a server that hangs with
its TCP connections open).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from async_db import AsyncConnectionHandler
from tests.fix_db import settings_dict_from_dsn

#: psycopg 3.3's cancel attempt (5 s) plus its wait for the query's end (5 s).
PSYCOPG_CANCEL_BOUND = 10.0


class FreezingProxy:
    """Forwards 127.0.0.1:<port> to the test server until :meth:`freeze`;
    from then on it accepts and reads but forwards nothing, either way."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self._host = str(params.get("host") or "127.0.0.1")
        self._port = int(params.get("port") or 5432)
        self.frozen = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, Any]:
        if self._host.startswith("/"):
            return await asyncio.open_unix_connection(
                f"{self._host}/.s.PGSQL.{self._port}"
            )
        return await asyncio.open_connection(self._host, self._port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: Any) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if self.frozen:
                    continue  # swallowed: the "server" stopped answering
                writer.write(data)
                await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: Any) -> None:
        if self.frozen:
            # New connections (psycopg's cancel request) hang too.
            self._writers.append(writer)
            return
        up_reader, up_writer = await self._open_upstream()
        self._writers += [writer, up_writer]
        for pipe in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def __aenter__(self) -> FreezingProxy:
        self._writers: list[Any] = []
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


@pytest.fixture
async def proxied(dsn: str) -> AsyncIterator[tuple[FreezingProxy, Any]]:
    async with FreezingProxy(dsn) as proxy:
        entry = settings_dict_from_dsn(dsn)
        entry["HOST"], entry["PORT"] = "127.0.0.1", str(proxy.port)
        entry["OPTIONS"]["connect_timeout"] = 2
        h = AsyncConnectionHandler({"default": entry})
        yield proxy, h
        await h.close_all()


@pytest.mark.slow
async def test_timeout_against_a_frozen_server_is_bounded(
    proxied: tuple[FreezingProxy, Any], caplog: Any
) -> None:
    proxy, h = proxied
    conn = h["default"]
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT 1")
    proxy.frozen = True
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        # The outer timeout only guards the test against a hang.
        async with asyncio.timeout(60):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    async with conn.cursor() as cursor:
                        await cursor.execute("SELECT 2")
    elapsed = time.monotonic() - started
    # The documented bound: the deadline, plus psycopg's cancel and wait.
    assert elapsed < 0.5 + PSYCOPG_CANCEL_BOUND + 2.0, elapsed
    # psycopg gave up on the connection: it is closed, never reused.
    assert conn.connection is None or conn.connection.closed
    assert any("closing connection" in r.getMessage() for r in caplog.records)
