"""Random programs of nested blocks, inserts, raised errors, set_rollback and
manual savepoints, run for real and in a small model of Django's rules; the
table must hold exactly what the model committed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from django.db.transaction import TransactionManagementError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from async_db import async_atomic, async_connections
from async_db.transaction import (
    savepoint,
    savepoint_commit,
    savepoint_rollback,
    set_rollback,
)

ENDINGS = ["ok", "raise", "rollback"]


class Boom(Exception):
    pass


def program_strategy() -> Any:
    leaf = st.just(("insert",))

    def extend(children: Any) -> Any:
        ops = st.lists(children, max_size=4)
        block = st.tuples(
            st.just("block"), st.booleans(), ops, st.sampled_from(ENDINGS)
        )
        manual = st.tuples(
            st.just("savepoint"),
            st.just(True),
            ops,
            st.sampled_from(["ok", "rollback"]),
        )
        return block | manual

    node = st.recursive(leaf, extend, max_leaves=14)
    outermost = st.tuples(
        st.just("block"),
        st.just(True),
        st.lists(node, max_size=5),
        st.sampled_from(ENDINGS),
    )
    return st.lists(outermost, min_size=1, max_size=3)


class Model:
    """Django's Atomic/savepoint rules on a list of rows."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.needs_rollback = False
        self.values = itertools.count()

    def run_ops(self, ops: list[Any]) -> None:
        for op in ops:
            with contextlib.suppress(Boom, TransactionManagementError):
                self.run(op, outermost=False)

    def run(self, op: Any, outermost: bool) -> None:
        if op[0] == "insert":
            value = f"v{next(self.values)}"
            if self.needs_rollback:
                raise TransactionManagementError
            self.rows.append(value)
        elif op[0] == "block":
            self.block(op, outermost)
        else:
            self.manual_savepoint(op)

    def block(self, op: Any, outermost: bool) -> None:
        _, use_savepoint, ops, ending = op
        if outermost:
            self.needs_rollback = False
            snapshot: list[str] | None = list(self.rows)
        elif use_savepoint and not self.needs_rollback:
            snapshot = list(self.rows)
        else:
            snapshot = None
        self.run_ops(ops)
        if ending == "rollback":
            self.needs_rollback = True
        failed = ending == "raise"
        if failed or self.needs_rollback:
            self.needs_rollback = False
            if snapshot is None:
                self.needs_rollback = True
            else:
                self.rows = snapshot
        if failed:
            raise Boom

    def manual_savepoint(self, op: Any) -> None:
        _, _, ops, ending = op
        if self.needs_rollback:
            raise TransactionManagementError  # savepoint() needs a query
        snapshot = list(self.rows)
        self.run_ops(ops)
        if self.needs_rollback:
            raise TransactionManagementError  # so does releasing it
        if ending == "rollback":
            self.rows = snapshot


class Runner:
    """The same programs, for real."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.values = itertools.count()

    async def run_ops(self, ops: list[Any]) -> None:
        for op in ops:
            with contextlib.suppress(Boom, TransactionManagementError):
                await self.run(op)

    async def run(self, op: Any) -> None:
        if op[0] == "insert":
            value = f"v{next(self.values)}"
            async with async_connections["default"].cursor() as cursor:
                await cursor.execute(
                    f"INSERT INTO {self.table} (name) VALUES (%s)", [value]
                )
        elif op[0] == "block":
            _, use_savepoint, ops, ending = op
            async with async_atomic(savepoint=use_savepoint):
                await self.run_ops(ops)
                if ending == "rollback":
                    set_rollback(True)
                if ending == "raise":
                    raise Boom
        else:
            _, _, ops, ending = op
            sid = await savepoint()
            assert sid is not None
            await self.run_ops(ops)
            if ending == "rollback":
                await savepoint_rollback(sid)
            else:
                await savepoint_commit(sid)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(program=program_strategy())
def test_random_programs_match_the_model(
    program: list[Any], table: str, observer: Any
) -> None:
    observer.execute(f"TRUNCATE {table}")
    model = Model()
    runner = Runner(table)

    async def main() -> None:
        for block in program:
            with contextlib.suppress(Boom):
                await runner.run(block)
            conn = async_connections["default"]
            assert not conn.in_atomic_block and not conn.needs_rollback
            assert await conn.get_autocommit() is True

    for block in program:
        with contextlib.suppress(Boom):
            model.run(block, outermost=True)
    asyncio.run(main())
    rows = observer.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    assert [name for (name,) in rows] == model.rows
