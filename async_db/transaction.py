"""Django's ``django.db.transaction`` for async code.

``async_atomic`` is a branch-for-branch port of Django's ``Atomic``: read its
``__aexit__`` against ``Atomic.__exit__``. The differences are the awaits, and
cancellation: a ``CancelledError`` is an exception like any other to the block
(it rolls back), and when the cleanup itself fails or is interrupted the
connection is discarded (closed, or replaced by its pool), never left dirty,
while the original exception propagates.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS, DatabaseError, Error
from django.db.transaction import TransactionManagementError

if TYPE_CHECKING:
    from async_db._handler import AsyncConnectionHandler
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper, OnCommitCallback

__all__ = [
    "Atomic",
    "TransactionManagementError",
    "async_atomic",
    "get_connection",
    "get_rollback",
    "mark_for_rollback_on_error",
    "on_commit",
    "savepoint",
    "savepoint_commit",
    "savepoint_rollback",
    "set_rollback",
]

logger = logging.getLogger("async_db")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def get_connection(using: str | None = None) -> BaseAsyncDatabaseWrapper:
    """The current task's wrapper for ``using`` (default alias if None)."""
    return _handler()[using or DEFAULT_DB_ALIAS]


@functools.cache
def _handler() -> AsyncConnectionHandler:
    # Imported on first use: async_db imports this module.
    from async_db import async_connections

    return async_connections


def get_rollback(using: str | None = None) -> bool:
    """Get the "needs rollback" flag -- for *advanced use* only."""
    return get_connection(using).get_rollback()


def set_rollback(rollback: bool, using: str | None = None) -> None:
    """Set or unset the "needs rollback" flag -- for *advanced use* only."""
    get_connection(using).set_rollback(rollback)


async def savepoint(using: str | None = None) -> str | None:
    """Create a savepoint; return its id (None outside a transaction)."""
    return await get_connection(using).savepoint()


async def savepoint_rollback(sid: str, using: str | None = None) -> None:
    """Roll back to the savepoint ``sid``."""
    await get_connection(using).savepoint_rollback(sid)


async def savepoint_commit(sid: str, using: str | None = None) -> None:
    """Release the savepoint ``sid``."""
    await get_connection(using).savepoint_commit(sid)


async def on_commit(
    func: OnCommitCallback, using: str | None = None, robust: bool = False
) -> None:
    """Run ``func`` (sync or async) when the current transaction commits; at
    once in autocommit mode. Dropped if the transaction rolls back."""
    await get_connection(using).on_commit(func, robust)


@asynccontextmanager
async def mark_for_rollback_on_error(using: str | None = None) -> AsyncIterator[None]:
    """Mark the transaction as needing rollback if the block raises, without
    starting a transaction in autocommit mode (Django's low-level utility)."""
    try:
        yield
    except Exception as exc:
        connection = get_connection(using)
        if connection.in_atomic_block:
            connection.needs_rollback = True
            connection.rollback_exc = exc
        raise


class Atomic:
    """An atomic block; a transaction, or a savepoint inside one.

    One instance can be entered many times, nested and concurrently in
    different tasks: all state lives on the task's connection wrapper
    (``atomic_blocks``, ``savepoint_ids``, ``in_atomic_block``,
    ``needs_rollback``), as in Django.
    """

    def __init__(self, using: str | None, savepoint: bool, durable: bool) -> None:
        self.using = using
        self.savepoint = savepoint
        self.durable = durable
        self._from_testcase = False

    async def __aenter__(self) -> None:
        connection = get_connection(self.using)
        share = connection.share
        if share is None:
            await self._enter(connection)
            return
        # Test-only share mode: the block holds the shared connection.
        await share.acquire(self)
        try:
            await self._enter(connection)
        except BaseException:
            share.release(self)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection = get_connection(self.using)
        share = connection.share
        if share is None or not share.holds(self):
            await self._exit(connection, exc_type, exc_value)
            return
        try:
            await self._exit(connection, exc_type, exc_value)
        finally:
            share.release(self)

    async def _enter(self, connection: BaseAsyncDatabaseWrapper) -> None:
        if (
            self.durable
            and connection.atomic_blocks
            and not connection.atomic_blocks[-1]._from_testcase
        ):
            raise RuntimeError(
                "A durable atomic block cannot be nested within another atomic block."
            )
        if not connection.in_atomic_block:
            # Reset state when entering an outermost atomic block.
            connection.commit_on_exit = True
            connection.needs_rollback = False
            if not await connection.get_autocommit():
                # Pretend we're already in an atomic block to bypass the code
                # that disables autocommit to enter a transaction, and make a
                # note to deal with this case in __aexit__.
                connection.in_atomic_block = True
                connection.commit_on_exit = False

        if connection.in_atomic_block:
            # We're already in a transaction; create a savepoint, unless we
            # were told not to or we're already in a transaction that must roll
            # back (a savepoint would fail: InFailedSqlTransaction).
            if self.savepoint and not connection.needs_rollback:
                sid = await connection.savepoint()
                connection.savepoint_ids.append(sid)
            else:
                connection.savepoint_ids.append(None)
        else:
            # Turning autocommit off also marks the spawn-time transaction
            # guard: tasks spawned inside this block can't use the alias.
            await connection.set_autocommit(False)
            connection.in_atomic_block = True

        if connection.in_atomic_block:
            connection.atomic_blocks.append(self)

    async def _exit(
        self,
        connection: BaseAsyncDatabaseWrapper,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
    ) -> None:
        if connection.in_atomic_block:
            connection.atomic_blocks.pop()

        if connection.savepoint_ids:
            sid = connection.savepoint_ids.pop()
        else:
            # Prematurely unset this flag to allow using commit or rollback.
            connection.in_atomic_block = False

        try:
            if connection.closed_in_transaction:
                # The database will perform a rollback by itself.
                # Wait until we exit the outermost block.
                pass

            elif exc_type is None and not connection.needs_rollback:
                if connection.in_atomic_block:
                    # Release savepoint if there is one
                    if sid is not None:
                        try:
                            await connection.savepoint_commit(sid)
                        except DatabaseError:
                            try:
                                await connection.savepoint_rollback(sid)
                                # The savepoint won't be reused. Release it to
                                # minimize overhead for the database server.
                                await connection.savepoint_commit(sid)
                            except Error:
                                # If rolling back to a savepoint fails, mark for
                                # rollback at a higher level and avoid shadowing
                                # the original exception.
                                connection.needs_rollback = True
                            raise
                else:
                    # Commit transaction
                    try:
                        await connection.commit()
                    except DatabaseError:
                        await _rollback_or_discard(connection)
                        raise
            else:
                # This flag will be set to True again if there isn't a
                # savepoint allowing to perform the rollback at this level.
                connection.needs_rollback = False
                if connection.in_atomic_block:
                    # Roll back to savepoint if there is one, mark for
                    # rollback otherwise.
                    if sid is None:
                        connection.needs_rollback = True
                        # Extension: the refusal that follows names its cause.
                        if exc_value is not None:
                            connection.rollback_exc = exc_value
                    else:
                        try:
                            await connection.savepoint_rollback(sid)
                            # The savepoint won't be reused. Release it to
                            # minimize overhead for the database server.
                            await connection.savepoint_commit(sid)
                        except Error:
                            # If rolling back to a savepoint fails, mark for
                            # rollback at a higher level and avoid shadowing
                            # the original exception.
                            connection.needs_rollback = True
                        except asyncio.CancelledError:
                            # Interrupted: the outer level must roll back, and
                            # the cancellation must not be lost.
                            connection.needs_rollback = True
                            raise
                else:
                    # Roll back transaction
                    await _rollback_or_discard(connection)
        # CancelledError included: whatever interrupted the cleanup, the
        # connection must leave the block clean or discarded.
        except BaseException:
            if not connection.in_atomic_block:
                # The outermost block failed to finish (commit or rollback
                # interrupted): its hooks never run, and a connection whose
                # transaction state isn't clean is not kept.
                connection.run_on_commit = []
                if connection.connection is not None and not connection.is_idle():
                    await _discard(connection)
            raise
        finally:
            # Outermost block exit when autocommit was enabled.
            if not connection.in_atomic_block:
                if connection.closed_in_transaction:
                    connection.connection = None
                    connection.closed_in_transaction = False
                else:
                    await _restore_autocommit(connection)
            # Outermost block exit when autocommit was disabled.
            elif not connection.savepoint_ids and not connection.commit_on_exit:
                if connection.closed_in_transaction:
                    connection.connection = None
                    connection.closed_in_transaction = False
                else:
                    connection.in_atomic_block = False

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with self:
                return await func(*args, **kwargs)

        return inner  # type: ignore[return-value]


@overload
def async_atomic(using: F) -> F: ...
@overload
def async_atomic(
    using: str | None = None, savepoint: bool = True, durable: bool = False
) -> Atomic: ...
def async_atomic(
    using: str | F | None = None, savepoint: bool = True, durable: bool = False
) -> Atomic | F:
    """Django's ``atomic`` for async code: ``async with async_atomic():``,
    ``@async_atomic``, ``@async_atomic()``, ``@async_atomic(using="other")``."""
    if callable(using):
        return Atomic(DEFAULT_DB_ALIAS, savepoint, durable)(using)
    return Atomic(using, savepoint, durable)


# ##### Cleanup helpers: never shadow the exception being handled #####


async def _rollback_or_discard(connection: BaseAsyncDatabaseWrapper) -> None:
    """Django's ``try: rollback() except Error: close()``, with cancellation:
    a rollback that fails or is interrupted discards the connection."""
    try:
        await connection.rollback()
    except (Error, asyncio.CancelledError) as exc:
        logger.warning(
            "error ignored in rollback on %r: %s; connection discarded",
            connection,
            exc or type(exc).__name__,
        )
        await _discard(connection)
        if isinstance(exc, asyncio.CancelledError):
            raise


async def _discard(connection: BaseAsyncDatabaseWrapper) -> None:
    """Close the connection whatever its state (a pool replaces it)."""
    connection.run_on_commit = []
    try:
        await connection.close()
    except Exception as exc:
        logger.warning("error ignored closing %r: %s", connection, exc)


async def _restore_autocommit(connection: BaseAsyncDatabaseWrapper) -> None:
    if connection.connection is None:
        # Discarded above: the next connect() restores AUTOCOMMIT itself.
        connection.autocommit = bool(connection.settings_dict["AUTOCOMMIT"])
        connection.run_on_commit = []
        return
    await connection.set_autocommit(True)
