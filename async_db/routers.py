"""Database routers for async code.

:class:`ReadYourWritesRouter` fixes what a primary/replica setup gets wrong
inside a transaction: Django's routers send reads to the replica even when the
task has just written the rows in a transaction on the primary that the replica
cannot see yet (uncommitted, or not replicated yet).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["ReadYourWritesRouter"]


class ReadYourWritesRouter:
    """Reads go to the transaction the current task has open, if it has one
    on the alias the model would be written to.

    Put it first in ``DATABASE_ROUTERS``; the routers after it decide
    everything else::

        DATABASE_ROUTERS = [
            "async_db.routers.ReadYourWritesRouter",
            "myproject.routers.PrimaryReplicaRouter",
        ]

    Inside ``async with async_atomic():`` (on the write alias) a native ORM read
    then runs on the block's connection and sees the block's writes; outside a
    transaction, and in other tasks, reads are routed as before. It decides
    from the current task's async-db transactions only (no I/O): sync code,
    ``sync_to_async`` threads and spawned tasks are routed as before.
    """

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        from django.db import router

        from async_db import _storage, async_connections

        try:
            task = asyncio.current_task()
        except RuntimeError:
            return None
        if task is None:
            return None
        marks = _storage.open_transactions()
        if not marks:
            return None
        write_alias = router.db_for_write(model, **hints)
        if marks.get((async_connections, write_alias)) is task:
            return str(write_alias)
        return None
