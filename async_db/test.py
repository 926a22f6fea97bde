"""Test helpers: isolate async writes per test, capture on_commit callbacks.

Two isolation modes, like Django's ``TestCase`` and ``TransactionTestCase``:

- :func:`isolated` (rollback mode): the test runs inside an outer
  ``async_atomic`` per alias that is rolled back at the end. Fast; but it only
  covers the test's own task. A task the test spawns gets a connection of its
  own, outside that transaction (DESIGN rule 3): async-db refuses it with
  ``TransactionManagementError`` on its first query, so such a test fails
  loudly instead of writing data the rollback can't undo. Use the flush mode
  for it, or await the work in the test's task. ``on_commit`` callbacks never
  run in this mode (nothing commits): use :func:`capture_on_commit_callbacks`.
- :func:`flushed` (flush mode): the test runs normally, committing for real;
  afterwards the given tables (default: every installed model's table) are
  truncated. Spawned tasks, ``new_connections()``, ``on_commit`` all behave
  as in production.

With pytest, mark a test ``@pytest.mark.async_db`` (rollback mode) or
``@pytest.mark.async_db(transaction=True)`` (flush mode) after enabling the
plugin (``-p async_db.pytest_plugin``, or list it in ``pytest_plugins``).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS

from async_db.transaction import Atomic

__all__ = ["capture_on_commit_callbacks", "flushed", "isolated"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _aliases(databases: Sequence[str] | str | None) -> list[str]:
    if databases is None:
        return [DEFAULT_DB_ALIAS]
    if databases == "__all__":
        from async_db import async_connections

        return list(async_connections)
    if isinstance(databases, str):
        return [databases]
    return list(databases)


class _Isolated:
    """Rollback mode: see :func:`isolated`."""

    def __init__(self, databases: Sequence[str] | str | None) -> None:
        self.aliases = _aliases(databases)
        self._stacks: list[AsyncExitStack] = []

    async def __aenter__(self) -> None:
        stack = AsyncExitStack()
        for alias in self.aliases:
            block = Atomic(alias, savepoint=True, durable=False)
            # As Django's TestCase: durable blocks inside the test still work.
            block._from_testcase = True
            await stack.enter_async_context(block)
            stack.push_async_callback(_roll_back_later, alias)
        self._stacks.append(stack)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stacks.pop().__aexit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with _Isolated(self.aliases):
                return await func(*args, **kwargs)

        return inner  # type: ignore[return-value]


async def _roll_back_later(alias: str) -> None:
    """Runs just before the outer block exits: mark it for rollback."""
    from async_db import async_connections

    conn = async_connections[alias]
    if conn.in_atomic_block:
        conn.set_rollback(True)


def isolated(databases: Sequence[str] | str | None = None) -> _Isolated:
    """Run a test (``async with isolated():`` or ``@isolated()``) inside a
    transaction per alias (default ``"default"``; ``"__all__"`` for every
    alias) that is rolled back at the end."""
    return _Isolated(databases)


@asynccontextmanager
async def flushed(
    databases: Sequence[str] | str | None = None,
    tables: Iterable[str] | None = None,
) -> AsyncIterator[None]:
    """Flush mode: run the block normally, then truncate ``tables`` (default:
    the tables of every installed model) on each alias."""
    try:
        yield
    finally:
        names = list(tables) if tables is not None else _installed_tables()
        if names:
            from async_db import async_connections

            for alias in _aliases(databases):
                async with async_connections[alias].cursor() as cursor:
                    quoted = ", ".join(f'"{name}"' for name in names)
                    await cursor.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")


def _installed_tables() -> list[str]:
    from django.apps import apps

    return sorted(
        {
            model._meta.db_table
            for model in apps.get_models()
            if model._meta.managed and not model._meta.proxy
        }
    )


@asynccontextmanager
async def capture_on_commit_callbacks(
    *, using: str = DEFAULT_DB_ALIAS, execute: bool = False
) -> AsyncIterator[list[Callable[[], Any]]]:
    """Django's ``captureOnCommitCallbacks`` for async code: yields the list of
    callbacks registered with ``on_commit`` inside the block (also those
    registered by executed callbacks); with ``execute=True`` they run at exit,
    in order, as after a commit."""
    from async_db import async_connections
    from async_db.backends.base.base import _run_commit_hook

    callbacks: list[Callable[[], Any]] = []
    conn = async_connections[using]
    start_count = len(conn.run_on_commit)
    try:
        yield callbacks
    finally:
        while True:
            callback_count = len(conn.run_on_commit)
            for _, callback, robust in conn.run_on_commit[start_count:]:
                callbacks.append(callback)
                if execute:
                    await _run_commit_hook(callback, robust, "during transaction ")
            if callback_count == len(conn.run_on_commit):
                break
            start_count = callback_count
