"""execute_wrapper: sync and async wrappers, nesting order, blocking."""

from __future__ import annotations

from typing import Any

import pytest


async def test_sync_wrapper_sees_every_query(connection: Any) -> None:
    seen: list[tuple[str, Any, bool]] = []

    def spy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append((sql, params, many))
        assert context["connection"] is connection
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT %s::int", [7])
            assert await cursor.fetchone() == (7,)
            assert seen and seen[-1][2] is False
            assert cursor is not None
    assert seen == [("SELECT %s::int", [7], False)]
    assert connection.execute_wrappers == []


async def test_async_wrapper_wraps_the_query(connection: Any, table: str) -> None:
    events: list[str] = []

    async def around(
        execute: Any, sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        events.append("before")
        result = await execute(sql, params, many, context)
        events.append("after")
        return result

    with connection.execute_wrapper(around):
        async with connection.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO {table} (name) VALUES (%s)", [("a",), ("b",)]
            )
            await cursor.execute(f"SELECT count(*) FROM {table}")
            assert await cursor.fetchone() == (2,)
    assert events == ["before", "after", "before", "after"]


async def test_nested_wrappers_apply_outer_first(connection: Any) -> None:
    order: list[str] = []

    def outer(execute: Any, *args: Any) -> Any:
        order.append("outer")
        return execute(*args)

    async def middle(execute: Any, *args: Any) -> Any:
        order.append("middle")
        return await execute(*args)

    def inner(execute: Any, *args: Any) -> Any:
        order.append("inner")
        return execute(*args)

    with (
        connection.execute_wrapper(outer),
        connection.execute_wrapper(middle),
        connection.execute_wrapper(inner),
    ):
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
    assert order == ["outer", "middle", "inner"]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_wrapper_can_block_execution(
    connection: Any, table: str, observer: Any, kind: str
) -> None:
    def blocker(*args: Any) -> Any:
        raise RuntimeError("No database access allowed here.")

    async def async_blocker(*args: Any) -> Any:
        raise RuntimeError("No database access allowed here.")

    wrapper = blocker if kind == "sync" else async_blocker
    with connection.execute_wrapper(wrapper):
        async with connection.cursor() as cursor:
            with pytest.raises(RuntimeError, match="No database access"):
                await cursor.execute(f"INSERT INTO {table} (name) VALUES ('x')")
    assert observer.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    # Outside the block, queries run again.
    async with connection.cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES ('y')")
    assert observer.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,)


async def test_sync_wrapper_returning_a_value_short_circuits(connection: Any) -> None:
    async def outer(execute: Any, *args: Any) -> Any:
        return await execute(*args)

    def fake(execute: Any, *args: Any) -> str:
        return "not executed"

    with connection.execute_wrapper(outer), connection.execute_wrapper(fake):
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            assert cursor.rowcount == -1
