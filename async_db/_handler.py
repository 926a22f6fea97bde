"""``AsyncConnectionHandler``: Django's ``BaseConnectionHandler``, per task.

``handler[alias]`` returns the current task's wrapper for ``alias`` (see
``_storage`` for who sees which connection). Access is synchronous and does no
I/O; the wrapper connects on first use and is released when its task ends.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.db.transaction import TransactionManagementError
from django.utils.connection import ConnectionDoesNotExist

from async_db import _share, _storage
from async_db._engine import load_backend
from async_db.backends.base.pools import PoolRegistry

if TYPE_CHECKING:
    import asyncio

    from async_db.backends.base.base import BaseAsyncDatabaseWrapper


class AsyncConnectionHandler:
    """Async connections for every alias of ``DATABASES`` (or of ``settings``).

    ``settings`` is a dict like ``DATABASES``; ``None`` reads Django's
    ``settings.DATABASES`` lazily, on first use.
    """

    settings_name = "DATABASES"

    def __init__(self, settings: dict[str, dict[str, Any]] | None = None) -> None:
        self._settings = settings
        #: One pool per alias, shared by every task using this handler.
        #: The pools of every alias, one per event loop; a loop's pools close
        #: when it ends, after its releases in flight have finished.
        self.pools = PoolRegistry(before_loop_close=_storage.wait_released)
        # Backend class per alias: every new task creates wrappers.
        self._backends: dict[str, type[BaseAsyncDatabaseWrapper]] = {}

    def __repr__(self) -> str:
        return f"<{self.__class__.__qualname__} aliases={list(self)!r}>"

    @cached_property
    def settings(self) -> dict[str, dict[str, Any]]:
        return self.configure_settings(self._settings)

    def configure_settings(
        self, settings: dict[str, dict[str, Any]] | None
    ) -> dict[str, dict[str, Any]]:
        """Fill in Django's defaults, exactly as ``django.db.connections`` does."""
        from django.db.utils import ConnectionHandler

        if settings is None:
            from django.conf import settings as django_settings

            settings = getattr(django_settings, self.settings_name)
        return ConnectionHandler().configure_settings(copy.deepcopy(settings))

    def __getitem__(self, alias: str) -> BaseAsyncDatabaseWrapper:
        task = _storage.current_task(f"async_connections[{alias!r}]")
        scope = _storage.task_scope(task)
        key = (self, alias)
        try:
            return scope.connections[key]
        except KeyError:
            pass
        if alias not in self.settings:
            raise ConnectionDoesNotExist(f"The connection '{alias}' doesn't exist.")
        shared = _share.shared_connection(key)
        if shared is not None:
            # Test-only share mode: the test's own wrapper (never stored in
            # this task's scope, so this task's end doesn't release it).
            return shared
        self._check_spawned_in_transaction(alias, task)
        conn = self.create_connection(alias, owner=task)
        scope.connections[key] = conn
        return conn

    def _check_spawned_in_transaction(
        self, alias: str, task: asyncio.Task[Any]
    ) -> None:
        parent = _storage.transaction_owner((self, alias))
        if parent is not None and parent is not task:
            raise TransactionManagementError(
                f"Task {task.get_name()!r} was started while task "
                f"{parent.get_name()!r} had a transaction open on database "
                f"'{alias}'. Its queries would run outside that transaction, on "
                f"a connection of its own. Use 'async with new_connections():' "
                f"in the task for an explicit independent connection, or await "
                f"the work in the task that owns the transaction."
            )

    def create_connection(
        self, alias: str, owner: asyncio.Task[Any] | None = None
    ) -> BaseAsyncDatabaseWrapper:
        """A new, unconnected wrapper for ``alias`` (no I/O)."""
        settings_dict = self.settings[alias]
        backend = load_backend(alias, settings_dict)
        return backend(
            settings_dict, alias, owner=owner, handler=self, pools=self.pools
        )

    def note_transaction(
        self, connection: BaseAsyncDatabaseWrapper, is_open: bool
    ) -> None:
        """Called by a wrapper of this handler when its transaction opens or
        ends: the spawn-time marker of rule 3 (see ``_storage``)."""
        _storage.note_transaction(connection, is_open)

    def __iter__(self) -> Iterator[str]:
        return iter(self.settings)

    def all(self, initialized_only: bool = False) -> list[BaseAsyncDatabaseWrapper]:
        """The current task's wrappers: every alias, or only those it used."""
        if initialized_only:
            return list(_storage.iter_scope(_storage.existing_scope(), self))
        return [self[alias] for alias in self]

    async def close_all(self) -> None:
        """Close (or return to its pool) every connection of the current task."""
        for conn in self.all(initialized_only=True):
            await conn.close()

    async def close_pools(self) -> None:
        """Close every alias's pool (application shutdown). The current task's
        pooled connections are returned first; a later use opens a new pool."""
        await self.close_all()
        await self.pools.close_all()
