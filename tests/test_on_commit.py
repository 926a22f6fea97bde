"""await on_commit(...): Django's rules, sync and async callbacks."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from async_db import async_atomic, async_connections
from async_db.transaction import on_commit, savepoint, savepoint_rollback


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def sync(self, name: str) -> Any:
        def hook() -> None:
            self.calls.append(name)

        hook.__qualname__ = f"sync_{name}"
        return hook

    def async_(self, name: str) -> Any:
        async def hook() -> None:
            self.calls.append(name)

        hook.__qualname__ = f"async_{name}"
        return hook


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


async def test_autocommit_runs_at_once(rec: Recorder) -> None:
    await on_commit(rec.sync("a"))
    await on_commit(rec.async_("b"))
    assert rec.calls == ["a", "b"]


async def test_after_outermost_commit_in_order_once(rec: Recorder) -> None:
    async with async_atomic():
        await on_commit(rec.sync("1"))
        async with async_atomic():
            await on_commit(rec.async_("2"))
        await on_commit(rec.sync("3"))
        assert rec.calls == []
    assert rec.calls == ["1", "2", "3"]
    async with async_atomic():
        pass
    assert rec.calls == ["1", "2", "3"]  # once


async def test_dropped_on_rollback(rec: Recorder) -> None:
    with pytest.raises(ValueError):
        async with async_atomic():
            await on_commit(rec.sync("x"))
            raise ValueError
    async with async_atomic():
        pass
    assert rec.calls == []


async def test_rolled_back_savepoint_drops_its_hooks(rec: Recorder) -> None:
    async with async_atomic():
        await on_commit(rec.sync("outer"))
        with pytest.raises(ValueError):
            async with async_atomic():
                await on_commit(rec.sync("inner"))
                raise ValueError
        sid = await savepoint()
        assert sid is not None
        await on_commit(rec.sync("manual"))
        await savepoint_rollback(sid)
    # As in Django, hooks belong to atomic blocks' savepoints: a manual
    # savepoint's rollback doesn't drop what was registered after it.
    assert rec.calls == ["outer", "manual"]


async def test_released_savepoint_keeps_its_hooks(rec: Recorder) -> None:
    async with async_atomic(), async_atomic():
        await on_commit(rec.async_("inner"))
    assert rec.calls == ["inner"]


async def test_robust_failure_is_logged_and_continues(
    rec: Recorder, caplog: Any
) -> None:
    def broken() -> None:
        raise RuntimeError("hook failed")

    async with async_atomic():
        await on_commit(broken, robust=True)
        await on_commit(rec.sync("after"))
    assert rec.calls == ["after"]
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.name == "django.db.backends.base"
    assert record.getMessage() == (
        "Error calling test_robust_failure_is_logged_and_continues.<locals>.broken "
        "in on_commit() during transaction (hook failed)."
    )
    # In autocommit, Django's other message.
    caplog.clear()
    await on_commit(broken, robust=True)
    assert caplog.records[0].getMessage().endswith("in on_commit() (hook failed).")


async def test_non_robust_failure_propagates_after_commit(
    rec: Recorder, table: str, observer: Any
) -> None:
    async def broken() -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        async with async_atomic():
            async with async_connections["default"].cursor() as cursor:
                await cursor.execute(f"INSERT INTO {table} (name) VALUES ('kept')")
            await on_commit(broken)
            await on_commit(rec.sync("cleared"))
    # The data is committed; the remaining hooks are cleared.
    assert observer.execute(f"SELECT name FROM {table}").fetchall() == [("kept",)]
    async with async_atomic():
        pass
    assert rec.calls == []
    assert async_connections["default"].run_on_commit == []


async def test_hooks_may_query_and_open_their_own_block(
    table: str, observer: Any
) -> None:
    async def write_audit() -> None:
        async with async_atomic(), async_connections["default"].cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES ('audit')")

    async with async_atomic():
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute(f"INSERT INTO {table} (name) VALUES ('main')")
        await on_commit(write_audit)
    rows = observer.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    assert rows == [("main",), ("audit",)]


async def test_hook_registered_inside_a_hook_runs_after_it(rec: Recorder) -> None:
    async def first() -> None:
        rec.calls.append("first:start")
        await on_commit(rec.sync("nested"))
        rec.calls.append("first:end")

    async with async_atomic():
        await on_commit(first)
        await on_commit(rec.sync("second"))
    assert rec.calls == ["first:start", "first:end", "second", "nested"]


async def test_hook_inside_a_hooks_own_block_runs_at_that_commit(rec: Recorder) -> None:
    async def first() -> None:
        async with async_atomic():
            await on_commit(rec.sync("inner-commit"))
        rec.calls.append("first:end")

    async with async_atomic():
        await on_commit(first)
    assert rec.calls == ["inner-commit", "first:end"]


async def test_non_callable_is_type_error() -> None:
    with pytest.raises(
        TypeError, match="on_commit\\(\\)'s callback must be a callable"
    ):
        await on_commit("not callable")  # type: ignore[arg-type]
    async with async_atomic():
        with pytest.raises(TypeError):
            await on_commit(None)  # type: ignore[arg-type]


async def test_hooks_from_before_a_reconnect_never_run(rec: Recorder) -> None:
    conn = async_connections["default"]
    await conn.set_autocommit(False)
    conn.in_atomic_block = True  # what async_atomic does; then the link drops
    await on_commit(rec.sync("stale"))
    conn.in_atomic_block = False
    await conn.close()
    await conn.connect()
    await conn.set_autocommit(True)
    async with async_atomic():
        pass
    assert rec.calls == []


async def test_using_other_alias(rec: Recorder) -> None:
    async with async_atomic(using="other"):
        await on_commit(rec.sync("other"), using="other")
        await on_commit(rec.sync("default"))  # autocommit on 'default': at once
        assert rec.calls == ["default"]
    assert rec.calls == ["default", "other"]
