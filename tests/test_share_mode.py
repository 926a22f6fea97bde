"""``isolated(spawned_tasks="share")``: a test's spawned tasks share its
connection, take turns, and are rolled back with it (issue 13, item 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db.transaction import TransactionManagementError
from django.http import HttpRequest, JsonResponse
from django.urls import path

from async_db import async_atomic, async_connections, new_connections
from async_db.test import isolated
from tests import docs_site


async def insert(table: str, name: str) -> int:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(
            f"INSERT INTO {table} (name) VALUES (%s) RETURNING id", [name]
        )
        (pk,) = await cursor.fetchone()
    return int(pk)


async def count(table: str) -> int:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute(f"SELECT count(*) FROM {table}")
        (n,) = await cursor.fetchone()
    return int(n)


def committed(observer: Any, table: str) -> int:
    return int(observer.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_forbid_is_the_default(table: str) -> None:
    async with isolated():
        with pytest.raises(TransactionManagementError, match="new_connections"):
            await asyncio.create_task(insert(table, "child"))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="spawned_tasks='shared'"):
        isolated(spawned_tasks="shared")


async def test_gathered_tasks_share_and_roll_back(table: str, observer: Any) -> None:
    async with isolated(spawned_tasks="share"):
        await insert(table, "parent")
        pids = await asyncio.gather(*(insert(table, f"c{i}") for i in range(5)))
        assert len(set(pids)) == 6 - 1  # five distinct rows
        # The children saw the test's row and the test sees theirs.
        assert await count(table) == 6

        async def backend_pid() -> int:
            async with async_connections["default"].cursor() as cursor:
                await cursor.execute("SELECT pg_backend_pid()")
                (pid,) = await cursor.fetchone()
            return int(pid)

        mine = await backend_pid()
        theirs = await asyncio.gather(*(backend_pid() for _ in range(4)))
        assert set(theirs) == {mine}  # one connection
        assert committed(observer, table) == 0  # nothing committed meanwhile
    assert committed(observer, table) == 0
    assert await count(table) == 0


async def test_atomic_blocks_of_siblings_take_turns(table: str) -> None:
    order: list[str] = []

    async def writer(name: str, fail: bool) -> None:
        try:
            async with async_atomic():
                order.append(f"{name} in")
                await insert(table, name)
                await asyncio.sleep(0.01)  # the sibling must wait, not interleave
                order.append(f"{name} out")
                if fail:
                    raise RuntimeError(name)
        except RuntimeError:
            pass

    async with isolated(spawned_tasks="share"):
        async with asyncio.TaskGroup() as group:
            for i in range(4):
                group.create_task(writer(f"w{i}", fail=i % 2 == 1))
        # Blocks never interleave: each "in" is followed by its own "out".
        assert [entry.split()[1] for entry in order] == ["in", "out"] * 4
        assert [entry.split()[0] for entry in order[::2]] == [
            entry.split()[0] for entry in order[1::2]
        ]
        # The failed blocks rolled back to their savepoints, the others stay.
        assert await count(table) == 2


async def test_tasks_spawned_inside_a_holders_block_may_use_it(table: str) -> None:
    async with isolated(spawned_tasks="share"):
        async with async_atomic():
            await insert(table, "holder")
            # Awaiting children from inside the block must not deadlock.
            await asyncio.gather(insert(table, "a"), insert(table, "b"))
            async with asyncio.timeout(10):
                await asyncio.create_task(nested_block(table))
        assert await count(table) == 4


async def nested_block(table: str) -> None:
    async with async_atomic():
        await insert(table, "nested")


async def test_a_task_waiting_too_long_names_the_holder(table: str) -> None:
    release = asyncio.Event()

    async def holder() -> None:
        async with async_atomic():
            await insert(table, "held")
            await release.wait()  # waits for the other task: a deadlock

    async def other() -> None:
        try:
            await insert(table, "other")
        finally:
            release.set()

    async with isolated(spawned_tasks="share", share_timeout=0.3):
        hold = asyncio.create_task(holder(), name="the-holder")
        await asyncio.sleep(0.05)
        with pytest.raises(TransactionManagementError) as caught:
            await asyncio.create_task(other(), name="the-waiter")
        await hold
    message = str(caught.value)
    assert "'the-waiter'" in message and "'the-holder'" in message
    assert "'default'" in message


async def test_new_connections_leave_the_share(table: str, observer: Any) -> None:
    async def independent() -> None:
        async with new_connections():
            await insert(table, "independent")

    try:
        async with isolated(spawned_tasks="share"):
            await asyncio.create_task(independent())
            assert await count(table) == 1  # committed on its own connection
        assert committed(observer, table) == 1
    finally:
        observer.execute(f"DELETE FROM {table}")


async def test_the_share_ends_with_the_test(table: str) -> None:
    async with isolated(spawned_tasks="share"):
        await asyncio.create_task(insert(table, "child"))
    conn = async_connections["default"]
    assert conn.share is None and conn.owner is asyncio.current_task()
    with pytest.raises(TransactionManagementError):
        async with async_atomic():
            await asyncio.create_task(insert(table, "late"))


# ##### A fan-out view behind AsyncAtomicRequestsMiddleware #####

FANOUT_TABLE: list[str] = []


async def fanout_view(request: HttpRequest) -> JsonResponse:
    table = FANOUT_TABLE[0]
    # The request's atomic block (the middleware) holds the connection; the
    # fan-out runs inside it.
    pks = await asyncio.gather(*(insert(table, f"f{i}") for i in range(3)))
    return JsonResponse({"rows": await count(table), "pks": len(set(pks))})


async def test_fanout_view_under_atomic_requests(table: str, observer: Any) -> None:
    FANOUT_TABLE[:] = [table]
    settings = async_connections.settings["default"]
    settings["ATOMIC_REQUESTS"] = True
    try:
        async with isolated(spawned_tasks="share"):
            await insert(table, "fixture")
            async with asyncio.timeout(20):
                answer = await docs_site.serve(
                    [path("fanout/", fanout_view)],
                    "GET",
                    "/fanout/",
                    middleware=["async_db.middleware.AsyncAtomicRequestsMiddleware"],
                )
            assert (answer.status, answer.json()) == (200, {"rows": 4, "pks": 3})
            assert await count(table) == 4  # the view's rows, in the test's data
        assert committed(observer, table) == 0
    finally:
        settings["ATOMIC_REQUESTS"] = False
