"""Warn when sync Django code queries an alias inside an async transaction.

``sync_to_async`` (and Channels' ``database_sync_to_async``) copy the calling
task's context into the worker thread, including async-db's open-transaction
marker (``_storage``). A query on ``django.db.connections[alias]`` that sees
the marker for the same alias runs on a *different* connection, outside the
task's ``async_atomic`` transaction: it can't see the block's uncommitted rows
and may wait forever on the block's locks. That is almost always a mistake, so
it gets a warning. The check is one ContextVar read per sync query.
"""

from __future__ import annotations

import warnings
from typing import Any

from django.db.backends.signals import connection_created

from async_db import _storage

__all__ = ["SyncQueryInAsyncTransactionWarning"]


class SyncQueryInAsyncTransactionWarning(RuntimeWarning):
    """A sync query ran while the calling task had an async transaction open."""


def _guard(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
    alias = context["connection"].alias
    for (_handler, marked_alias), task in _storage.open_transactions().items():
        if marked_alias == alias:
            warnings.warn(
                f"A sync query on django.db.connections['{alias}'] ran while task "
                f"{task.get_name()!r} has an async transaction open on '{alias}'. "
                f"It runs on another connection, outside that transaction: it "
                f"doesn't see the transaction's writes and can wait on its locks. "
                f"Use async_connections['{alias}'] inside async_atomic blocks.",
                SyncQueryInAsyncTransactionWarning,
                stacklevel=2,
            )
            break
    return execute(sql, params, many, context)


def _install(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _guard not in connection.execute_wrappers:
        connection.execute_wrappers.append(_guard)


def install() -> None:
    """Guard every sync connection Django opens from now on."""
    connection_created.connect(_install, dispatch_uid="async_db_interop_guard")
