"""``AsyncDatabasePool``: psycopg_pool's ``AsyncConnectionPool``, safe at loop end.

The hang it fixes (issue 10, item 1). psycopg_pool runs its maintenance
(connecting, returning, resetting connections) in worker tasks. A worker runs
each maintenance task inside ``except CLIENT_EXCEPTIONS`` so that one failure
doesn't kill it, and for the async pool ``CLIENT_EXCEPTIONS`` includes
``asyncio.CancelledError``. ``asyncio.run`` ends by cancelling every task once
and waiting for all of them (``_cancel_all_tasks``). A worker that is in the
middle of a maintenance task at that moment (resetting a returned connection,
opening one) gets its one cancellation inside that task; the pool logs it
("error resetting connection", "error connecting") and the worker goes back to
waiting on its queue, forever: ``asyncio.run`` never returns. Any
``AsyncConnectionPool`` left open inside ``asyncio.run`` can hang this way;
the minimal reproduction is in ``docs/reliability.rst``.

What this subclass changes:

- a worker stops once its task has been asked to cancel, even if the
  maintenance code swallowed the ``CancelledError`` (``Task.cancelling()``);
- the messages psycopg_pool logs about the work such a stopping worker
  abandoned are dropped: they describe a loop shutting down, not a fault;
- ``close()`` works after the loop's end cancelled the workers;
- the last error of a failed connection attempt is kept, so a pool that cannot
  connect at all reports why (``last_connect_error``).

async-db also runs no ``reset`` in the pool's workers: the session is reset by
the task that returns the connection (``DatabaseWrapper._return_to_pool``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import psycopg
import psycopg_pool
from psycopg_pool.pool_async import StopWorker

#: Worker tasks of async-db pools (their log records may be filtered).
_workers: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


class AsyncDatabasePool(psycopg_pool.AsyncConnectionPool[Any]):
    """The pool of one alias in one event loop."""

    #: The error of the last failed connection attempt, ``None`` after a
    #: successful one.
    last_connect_error: Exception | None = None

    @classmethod
    async def worker(cls, q: Any) -> None:
        """psycopg_pool's worker loop, which stops when it is cancelled."""
        task = asyncio.current_task()
        if task is not None:
            _workers.add(task)
        while True:
            job = await q.get()
            if isinstance(job, StopWorker):
                return
            try:
                await job.run()
            except Exception as ex:
                logger.warning("task run %s failed: %s: %s", job, type(ex).__name__, ex)
            # CancelledError propagates from here; and a cancellation that the
            # maintenance code caught and logged still counts.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Close the pool, also after its loop's end cancelled its workers.

        psycopg_pool's ``close()`` gathers the worker tasks; once they have
        been cancelled that gather re-raises their ``CancelledError`` and the
        close stops half-way, leaving the idle connections open. Finished
        workers are dropped first (private attributes of psycopg_pool 3.2 and
        3.3; the tests of loop shutdown fail if that changes).
        """
        self._workers = [w for w in self._workers if not w.done()]
        if self._sched_runner is not None and self._sched_runner.done():
            self._sched_runner = None
        await super().close(timeout)

    async def _connect(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        # Overrides a private method (psycopg_pool 3.2, 3.3) only to remember
        # why connecting failed: the pool itself just logs it.
        try:
            connection = await super()._connect(timeout)
        except psycopg.Error as exc:
            self.last_connect_error = exc
            raise
        self.last_connect_error = None
        return connection


logger = logging.getLogger("psycopg.pool")


class _StoppingWorkerFilter(logging.Filter):
    """Drop what a cancelled async-db pool worker logs about abandoned work."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return True
        return not (task is not None and task in _workers and task.cancelling())


_filter = _StoppingWorkerFilter()
if _filter not in logger.filters:
    logger.addFilter(_filter)
