"""async_atomic: Django's Atomic semantics, checked on the server and in the
exact SQL sent. The data-visibility class is re-run inside an outer block and
with autocommit off (Django's subclass trick)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.db import DatabaseError, IntegrityError, OperationalError
from django.db.transaction import TransactionManagementError
from django.db.utils import InternalError

from async_db import async_atomic, async_connections, new_connections
from async_db.transaction import (
    get_rollback,
    mark_for_rollback_on_error,
    savepoint,
    savepoint_commit,
    savepoint_rollback,
    set_rollback,
)


async def insert(table: str, name: str, using: str = "default") -> None:
    async with async_connections[using].cursor() as cursor:
        await cursor.execute(f"INSERT INTO {table} (name) VALUES (%s)", [name])


async def names(table: str, using: str = "default") -> list[str]:
    """What the current task's connection sees (its own transaction included)."""
    async with async_connections[using].cursor() as cursor:
        await cursor.execute(f"SELECT name FROM {table} ORDER BY id")
        return [name for (name,) in await cursor.fetchall()]


def committed(observer: Any, table: str) -> list[str]:
    rows = observer.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    return [name for (name,) in rows]


class AtomicTests:
    """Data semantics; subclasses re-run them under another precondition."""

    @contextlib.asynccontextmanager
    async def context(self) -> AsyncIterator[None]:
        yield

    async def test_commit(self, table: str) -> None:
        async with self.context():
            async with async_atomic():
                await insert(table, "tintin")
            assert await names(table) == ["tintin"]

    async def test_rollback_on_exception(self, table: str) -> None:
        async with self.context():
            with pytest.raises(ValueError, match="oops"):
                async with async_atomic():
                    await insert(table, "haddock")
                    raise ValueError("oops")
            assert await names(table) == []

    async def test_nested_commit_commit(self, table: str) -> None:
        async with self.context():
            async with async_atomic():
                await insert(table, "tintin")
                async with async_atomic():
                    await insert(table, "archibald")
            assert await names(table) == ["tintin", "archibald"]

    async def test_nested_commit_rollback(self, table: str) -> None:
        async with self.context():
            async with async_atomic():
                await insert(table, "tintin")
                with pytest.raises(ValueError):
                    async with async_atomic():
                        await insert(table, "haddock")
                        raise ValueError
            assert await names(table) == ["tintin"]

    async def test_nested_rollback_commit(self, table: str) -> None:
        async with self.context():
            with pytest.raises(ValueError):
                async with async_atomic():
                    await insert(table, "tintin")
                    async with async_atomic():
                        await insert(table, "haddock")
                    raise ValueError
            assert await names(table) == []

    async def test_merged_commit_commit(self, table: str) -> None:
        async with self.context():
            async with async_atomic():
                await insert(table, "tintin")
                async with async_atomic(savepoint=False):
                    await insert(table, "archibald")
            assert await names(table) == ["tintin", "archibald"]

    async def test_merged_inner_error_breaks_the_outer_block(self, table: str) -> None:
        async with self.context():
            with pytest.raises(TransactionManagementError) as info:
                async with async_atomic():
                    await insert(table, "tintin")
                    with pytest.raises(ValueError, match="inner"):
                        async with async_atomic(savepoint=False):
                            await insert(table, "haddock")
                            raise ValueError("inner")
                    await insert(table, "calculus")  # refused until the block ends
            assert isinstance(info.value.__cause__, ValueError)
            assert await names(table) == []

    async def test_reuse_one_atomic_object(self, table: str) -> None:
        block = async_atomic()
        async with self.context():
            async with block:
                await insert(table, "tintin")
                with pytest.raises(ValueError):
                    async with block:
                        await insert(table, "haddock")
                        raise ValueError
                async with block:
                    await insert(table, "calculus")
            async with block:
                await insert(table, "nestor")
            assert await names(table) == ["tintin", "calculus", "nestor"]

    async def test_set_rollback(self, table: str) -> None:
        async with self.context():
            async with async_atomic():
                await insert(table, "tintin")
                assert get_rollback() is False
                set_rollback(True)
                assert get_rollback() is True
            assert await names(table) == []

    async def test_raw_error_caught_inside_leaves_aborted_transaction(
        self, table: str
    ) -> None:
        async with self.context():
            with pytest.raises(InternalError):
                async with async_atomic():
                    await insert(table, "tintin")
                    with pytest.raises(IntegrityError):
                        await insert(table, "tintin")
                    # PostgreSQL's aborted state, as in Django.
                    await insert(table, "haddock")
            assert await names(table) == []

    async def test_mark_for_rollback_on_error(self, table: str) -> None:
        async with self.context():
            with pytest.raises(TransactionManagementError) as info:
                async with async_atomic():
                    await insert(table, "tintin")
                    with pytest.raises(ValueError):
                        async with mark_for_rollback_on_error():
                            raise ValueError("marked")
                    await insert(table, "haddock")
            assert str(info.value.__cause__) == "marked"
            assert await names(table) == []

    async def test_manual_savepoints(self, table: str) -> None:
        async with self.context():
            async with async_atomic():
                await insert(table, "tintin")
                sid = await savepoint()
                assert sid is not None
                await insert(table, "haddock")
                await savepoint_rollback(sid)
                sid2 = await savepoint()
                assert sid2 is not None
                await insert(table, "calculus")
                await savepoint_commit(sid2)
            assert await names(table) == ["tintin", "calculus"]


class TestAtomic(AtomicTests):
    pass


class TestAtomicInsideTransaction(AtomicTests):
    """Every test again, inside an outer block that rolls back at the end."""

    @contextlib.asynccontextmanager
    async def context(self) -> AsyncIterator[None]:
        async with async_atomic():
            yield
            set_rollback(True)


class TestAtomicWithoutAutocommit(AtomicTests):
    """Every test again with autocommit off: blocks don't start transactions."""

    @contextlib.asynccontextmanager
    async def context(self) -> AsyncIterator[None]:
        conn = async_connections["default"]
        await conn.set_autocommit(False)
        try:
            yield
        finally:
            await conn.rollback()
            await conn.set_autocommit(True)


# ##### Exact SQL and server state (outermost blocks) #####


async def test_sql_commit(table: str, sql_log: Any, observer: Any) -> None:
    await sql_log.start(async_connections["default"])
    async with async_atomic():
        await insert(table, "tintin")
    assert sql_log.statements == [
        "BEGIN",
        f"INSERT INTO {table} (name) VALUES ('tintin')",
        "COMMIT",
    ]
    assert committed(observer, table) == ["tintin"]


async def test_sql_rollback(table: str, sql_log: Any, observer: Any) -> None:
    await sql_log.start(async_connections["default"])
    with pytest.raises(ValueError):
        async with async_atomic():
            await insert(table, "tintin")
            raise ValueError
    assert sql_log.statements == [
        "BEGIN",
        f"INSERT INTO {table} (name) VALUES ('tintin')",
        "ROLLBACK",
    ]
    assert committed(observer, table) == []


async def test_sql_nested(table: str, sql_log: Any, observer: Any) -> None:
    await sql_log.start(async_connections["default"])
    async with async_atomic():
        await insert(table, "a")
        async with async_atomic():
            await insert(table, "b")
        with pytest.raises(ValueError):
            async with async_atomic():
                await insert(table, "c")
                raise ValueError
        async with async_atomic(savepoint=False):
            await insert(table, "d")
    assert sql_log.statements == [
        "BEGIN",
        f"INSERT INTO {table} (name) VALUES ('a')",
        'SAVEPOINT "s_x1"',
        f"INSERT INTO {table} (name) VALUES ('b')",
        'RELEASE SAVEPOINT "s_x1"',
        'SAVEPOINT "s_x2"',
        f"INSERT INTO {table} (name) VALUES ('c')",
        'ROLLBACK TO SAVEPOINT "s_x2"',
        'RELEASE SAVEPOINT "s_x2"',
        f"INSERT INTO {table} (name) VALUES ('d')",
        "COMMIT",
    ]
    assert committed(observer, table) == ["a", "b", "d"]


async def test_sql_failing_merged_block(
    table: str, sql_log: Any, observer: Any
) -> None:
    await sql_log.start(async_connections["default"])
    with pytest.raises(ValueError):
        async with async_atomic():
            await insert(table, "a")
            async with async_atomic(savepoint=False):
                await insert(table, "b")
                raise ValueError
    assert sql_log.statements == [
        "BEGIN",
        f"INSERT INTO {table} (name) VALUES ('a')",
        f"INSERT INTO {table} (name) VALUES ('b')",
        "ROLLBACK",
    ]
    assert committed(observer, table) == []


async def test_nothing_visible_before_commit(table: str, observer: Any) -> None:
    async with async_atomic():
        await insert(table, "tintin")
        assert committed(observer, table) == []
        assert async_connections["default"].in_atomic_block
    assert committed(observer, table) == ["tintin"]
    assert not async_connections["default"].in_atomic_block


# ##### Rules #####


async def test_durable_nested_is_runtime_error() -> None:
    async with async_atomic():
        with pytest.raises(
            RuntimeError,
            match=re.escape(
                "A durable atomic block cannot be nested within another atomic block."
            ),
        ):
            async with async_atomic(durable=True):
                pass


async def test_durable_outermost_commits(table: str, observer: Any) -> None:
    async with async_atomic(durable=True):
        await insert(table, "tintin")
    assert committed(observer, table) == ["tintin"]


async def test_decorator_forms(table: str, observer: Any) -> None:
    @async_atomic
    async def bare(name: str) -> str:
        await insert(table, name)
        assert async_connections["default"].in_atomic_block
        return name

    @async_atomic()
    async def called(name: str) -> None:
        await insert(table, name)

    @async_atomic(using="other")
    async def other(name: str) -> None:
        assert async_connections["other"].in_atomic_block
        assert not async_connections["default"].in_atomic_block
        await insert(table, name, using="other")

    assert await bare("a") == "a"
    await called("b")
    await other("c")
    assert bare.__name__ == "bare"
    assert committed(observer, table) == ["a", "b", "c"]


@pytest.mark.parametrize("method", ["commit", "rollback", "set_autocommit"])
async def test_transaction_control_forbidden_in_block(method: str) -> None:
    conn = async_connections["default"]
    async with async_atomic():
        call = getattr(conn, method)
        args = (True,) if method == "set_autocommit" else ()
        with pytest.raises(
            TransactionManagementError,
            match=re.escape("This is forbidden when an 'atomic' block is active."),
        ):
            await call(*args)


async def test_rollback_flag_outside_block() -> None:
    with pytest.raises(TransactionManagementError, match="outside of an 'atomic'"):
        get_rollback()
    with pytest.raises(TransactionManagementError, match="outside of an 'atomic'"):
        set_rollback(True)


async def test_close_inside_block(table: str, observer: Any) -> None:
    conn = async_connections["default"]
    async with async_atomic():
        await insert(table, "lost")
        await conn.close()
        # As Django: the driver's error for a closed connection.
        with pytest.raises(OperationalError, match="connection is closed"):
            await insert(table, "refused")
        assert conn.closed_in_transaction and conn.needs_rollback
    assert committed(observer, table) == []
    # The connection works after the block.
    await insert(table, "after")
    assert committed(observer, table) == ["after"]


@pytest.fixture
def other_without_autocommit() -> Any:
    settings_dict = async_connections.settings["other"]
    settings_dict["AUTOCOMMIT"] = False
    try:
        yield
    finally:
        settings_dict["AUTOCOMMIT"] = True


async def test_autocommit_false_setting(
    other_without_autocommit: Any, table: str, sql_log: Any, observer: Any
) -> None:
    conn = async_connections["other"]
    await sql_log.start(conn)
    assert await conn.get_autocommit() is False
    async with async_atomic(using="other"):
        await insert(table, "x", using="other")
    # As in Django: the block is a savepoint in the caller's transaction, and
    # nothing is committed until the caller commits.
    assert committed(observer, table) == []
    await conn.commit()
    assert committed(observer, table) == ["x"]
    assert sql_log.statements == [
        "BEGIN",
        'SAVEPOINT "s_x1"',
        f"INSERT INTO {table} (name) VALUES ('x')",
        'RELEASE SAVEPOINT "s_x1"',
        "COMMIT",
    ]


# ##### Spawned tasks #####


async def test_task_spawned_inside_block_is_refused(table: str, observer: Any) -> None:
    async def child() -> None:
        await insert(table, "escaped")

    async with async_atomic():
        await insert(table, "inside")
        task = asyncio.create_task(child(), name="worker")
        with pytest.raises(TransactionManagementError) as info:
            await task
    message = str(info.value)
    assert "'worker'" in message and "'default'" in message
    assert "new_connections()" in message
    assert committed(observer, table) == ["inside"]


async def test_straggler_can_never_commit_after_rollback(
    table: str, observer: Any
) -> None:
    block_done = asyncio.Event()

    async def straggler() -> None:
        await block_done.wait()
        await insert(table, "late")

    with pytest.raises(ValueError):
        async with async_atomic():
            await insert(table, "inside")
            task = asyncio.create_task(straggler())
            raise ValueError
    block_done.set()
    with pytest.raises(TransactionManagementError):
        await task
    assert committed(observer, table) == []


async def test_new_connections_in_spawned_task_is_independent(
    table: str, observer: Any
) -> None:
    async def child() -> list[str]:
        async with new_connections():
            seen = await names(table)  # outside the parent's transaction
            await insert(table, "independent")
            return seen

    with pytest.raises(ValueError):
        async with async_atomic():
            await insert(table, "uncommitted")
            assert await asyncio.create_task(child()) == []
            raise ValueError
    assert committed(observer, table) == ["independent"]


async def test_owner_check_inside_block() -> None:
    conn = async_connections["default"]
    async with async_atomic():

        async def misuse() -> None:
            await conn.savepoint()

        with pytest.raises(DatabaseError, match="belongs to another task"):
            await asyncio.create_task(misuse())
