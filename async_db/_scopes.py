"""``new_connections()`` and ``aclose_old_connections()``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from async_db import _storage

if TYPE_CHECKING:
    from async_db._handler import AsyncConnectionHandler

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class new_connections:
    """An explicit scope of fresh, independent connections.

    Inside ``async with new_connections():`` every alias (of every handler)
    resolves to a new connection of the current task, outside any transaction
    the task had open (DEP 0009's "paused" outer transaction). On exit, normal
    or error, the scope's connections are closed or returned to their pool and
    the previous wrappers are back, the same objects, untouched. Scopes nest.
    Also usable as a decorator: ``@new_connections()``.
    """

    def __init__(self) -> None:
        self._entered: list[_storage.enter_new_scope] = []

    async def __aenter__(self) -> None:
        task = _storage.current_task("new_connections()")
        self._entered.append(_storage.enter_new_scope(task))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Storage is restored first, synchronously: even if the release below
        # is cancelled, the task is back on its previous wrappers.
        connections = self._entered.pop().exit()
        if connections:
            release = _storage.start_release(asyncio.get_running_loop(), connections)
            # Shield the release and nothing else: a cancelled caller must not
            # strand the scope's connections (the task keeps running).
            await asyncio.shield(release)

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            # A fresh scope object per call: one decorated function may run in
            # many tasks at once.
            async with new_connections():
                return await func(*args, **kwargs)

        return inner  # type: ignore[return-value]


async def aclose_old_connections(handler: AsyncConnectionHandler | None = None) -> None:
    """Close or return the current task's connections that are unusable or past
    ``CONN_MAX_AGE`` (honouring ``CONN_HEALTH_CHECKS``), as Django's
    ``close_old_connections`` does per request. Connections inside an atomic
    block are left alone. Call it between units of work in long-lived tasks
    (Channels consumers, workers) so they don't pin a pool slot."""
    from async_db import async_connections

    for conn in (handler or async_connections).all(initialized_only=True):
        if not conn.in_atomic_block:
            await conn.close_if_unusable_or_obsolete()
