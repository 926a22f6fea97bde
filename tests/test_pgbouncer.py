"""Behind a real PgBouncer, transaction and session pooling (issue 14, item 1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.db import InterfaceError, OperationalError, ProgrammingError

from async_db import AsyncConnectionHandler
from async_db._embedded import settings_dict_from_dsn
from async_db._storage import wait_released
from async_db.transaction import Atomic, async_atomic, on_commit
from tests.fix_db import configured
from tests.pgbouncer import PgBouncer, bouncer_backends, bouncer_role, start_bouncer

APP_NAME = "async-db-bouncer-client"


def bounced_databases(bouncer: PgBouncer, **options: Any) -> dict[str, Any]:
    entry = settings_dict_from_dsn(bouncer.dsn, application_name=APP_NAME)
    entry["OPTIONS"].update(options)
    entry["CONN_HEALTH_CHECKS"] = True
    return {"default": entry}


@contextlib.asynccontextmanager
async def bouncer(dsn: str, observer: Any, mode: str) -> AsyncIterator[PgBouncer]:
    with bouncer_role(observer):
        running = await asyncio.to_thread(start_bouncer, dsn, mode)
        try:
            yield running
        finally:
            await asyncio.to_thread(running.close)


ALIAS = "bouncer"


@contextlib.asynccontextmanager
async def handler_for(databases: dict[str, Any]) -> AsyncIterator[Any]:
    """The global handler with an extra alias "bouncer" (async_atomic and
    on_commit resolve aliases through it); removed again at the end."""
    from async_db import async_connections

    async_connections.settings[ALIAS] = configured(databases["default"])
    try:
        yield async_connections
    finally:
        await wait_released()
        await async_connections.close_pools()
        del async_connections.settings[ALIAS]


class Peak:
    """Polls the server for PgBouncer's backends while a load runs."""

    def __init__(self, observer: Any) -> None:
        self.observer = observer
        self.peak = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            count = await asyncio.to_thread(bouncer_backends, self.observer)
            self.peak = max(self.peak, count)
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()


def atomic(h: Any) -> Atomic:
    return async_atomic(using=ALIAS)


async def test_server_side_cursors_need_a_transaction_behind_transaction_pooling(
    dsn: str, observer: Any
) -> None:
    async with (
        bouncer(dsn, observer, "transaction") as running,
        handler_for(
            bounced_databases(running, transaction_pooling=True, pool={"max_size": 4})
        ) as h,
    ):

        async def autocommit_chunked() -> None:
            async with h[ALIAS].chunked_cursor() as cursor:
                await cursor.execute("SELECT generate_series(1, 3)")

        with pytest.raises(ProgrammingError, match="transaction_pooling"):
            await asyncio.create_task(autocommit_chunked())

        async def in_transaction() -> list[int]:
            conn = h[ALIAS]
            await conn.set_autocommit(False)
            try:
                async with conn.chunked_cursor() as cursor:
                    cursor.itersize = 2
                    await cursor.execute("SELECT generate_series(1, 5)")
                    return [v async for (v,) in cursor]
            finally:
                await conn.commit()
                await conn.set_autocommit(True)

        assert await asyncio.create_task(in_transaction()) == [1, 2, 3, 4, 5]


def test_assume_role_is_refused_with_transaction_pooling(dsn: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    entry = settings_dict_from_dsn(dsn, transaction_pooling=True, assume_role="x")
    h = AsyncConnectionHandler({"default": entry})

    async def connect() -> None:
        await h["default"].ensure_connection()

    with pytest.raises(ImproperlyConfigured, match="assume_role"):
        asyncio.run(connect())


@pytest.mark.slow
async def test_mixed_load_through_transaction_pooling(
    dsn: str, observer: Any, table: str
) -> None:
    committed_hooks: list[str] = []

    async def work(i: int, h: Any) -> None:
        conn = h[ALIAS]
        kind = i % 5
        if kind == 0:  # autocommit write
            async with conn.cursor() as cursor:
                await cursor.execute(
                    f"INSERT INTO {table} (name, value) VALUES (%s, 1)", [f"auto{i}"]
                )
        elif kind == 1:  # nested blocks, the inner one rolled back
            async with atomic(h):
                async with conn.cursor() as cursor:
                    await cursor.execute(
                        f"INSERT INTO {table} (name, value) VALUES (%s, 2)",
                        [f"outer{i}"],
                    )
                with contextlib.suppress(RuntimeError):
                    async with atomic(h):
                        async with conn.cursor() as cursor:
                            await cursor.execute(
                                f"INSERT INTO {table} (name, value) VALUES (%s, 3)",
                                [f"inner{i}"],
                            )
                        raise RuntimeError("roll back the savepoint")
                await on_commit(
                    using=ALIAS, func=lambda: committed_hooks.append(f"outer{i}")
                )
        elif kind == 2:  # a block rolled back entirely
            with contextlib.suppress(RuntimeError):
                async with atomic(h):
                    async with conn.cursor() as cursor:
                        await cursor.execute(
                            f"INSERT INTO {table} (name, value) VALUES (%s, 4)",
                            [f"gone{i}"],
                        )
                    await on_commit(
                        using=ALIAS, func=lambda: committed_hooks.append("never")
                    )
                    raise RuntimeError("roll back")
        elif kind == 3:  # a chunked read inside a transaction
            async with atomic(h), conn.chunked_cursor() as cursor:
                cursor.itersize = 7
                await cursor.execute("SELECT generate_series(1, 20)")
                assert [v async for (v,) in cursor] == list(range(1, 21))
        else:  # a plain read
            async with conn.cursor() as cursor:
                await cursor.execute("SELECT 1")
                assert await cursor.fetchone() == (1,)

    async with (
        bouncer(dsn, observer, "transaction") as running,
        handler_for(
            bounced_databases(
                running,
                transaction_pooling=True,
                pool={"min_size": 0, "max_size": 50, "timeout": 60},
            )
        ) as h,
    ):
        peak = Peak(observer)
        poller = asyncio.create_task(peak.run())
        results = await asyncio.gather(
            *(asyncio.create_task(work(i, h)) for i in range(500)),
            return_exceptions=True,
        )
        peak.stop()
        await poller
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    names = {row[0] for row in observer.execute(f"SELECT name FROM {table}").fetchall()}
    expected = {f"auto{i}" for i in range(0, 500, 5)} | {
        f"outer{i}" for i in range(1, 500, 5)
    }
    assert names == expected  # every committed row, no rolled-back one
    assert sorted(committed_hooks) == sorted(f"outer{i}" for i in range(1, 500, 5))
    assert 0 < peak.peak <= 5


@pytest.mark.slow
async def test_pgbouncer_restarted_mid_load(dsn: str, observer: Any) -> None:
    async with (
        bouncer(dsn, observer, "transaction") as running,
        handler_for(
            bounced_databases(
                running,
                transaction_pooling=True,
                pool={"min_size": 0, "max_size": 20, "timeout": 30},
            )
        ) as h,
    ):
        done: list[None] = []
        flowing = asyncio.Event()  # ten queries went through PgBouncer

        async def query() -> None:
            async with h[ALIAS].cursor() as cursor:
                await cursor.execute("SELECT pg_sleep(0.05)")
            done.append(None)
            if len(done) >= 10:
                flowing.set()

        load = [asyncio.create_task(query()) for _ in range(100)]
        async with asyncio.timeout(30):
            await flowing.wait()
        await asyncio.to_thread(running.restart)
        results = await asyncio.gather(*load, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        # In-flight work failed with Django's errors, nothing else.
        assert failures, "the restart hit no work in flight"
        assert all(isinstance(f, OperationalError | InterfaceError) for f in failures)
        # Later work succeeds, same process, same pool (health checks replace
        # the dead connections).
        later = await asyncio.gather(
            *(asyncio.create_task(query()) for _ in range(50)),
            return_exceptions=True,
        )
        assert [r for r in later if isinstance(r, BaseException)] == []


async def test_session_pooling(dsn: str, observer: Any) -> None:
    async with (
        bouncer(dsn, observer, "session") as running,
        handler_for(bounced_databases(running, pool={"max_size": 2})) as h,
    ):

        async def held_cursor_and_setting() -> tuple[list[int], str]:
            conn = h[ALIAS]
            async with conn.chunked_cursor() as cursor:  # WITH HOLD, autocommit
                await cursor.execute("SELECT generate_series(1, 3)")
                rows = [v async for (v,) in cursor]
            async with conn.cursor() as cursor:
                await cursor.execute("SHOW statement_timeout")
                (before,) = await cursor.fetchone()
                await cursor.execute("SET statement_timeout = '7s'")
            return rows, str(before)

        for _ in range(3):
            rows, before = await asyncio.create_task(held_cursor_and_setting())
            assert rows == [1, 2, 3]
            assert before == "0"  # the previous task's SET was reset
            await wait_released()
