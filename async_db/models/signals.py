"""Signal dispatch for native ORM calls: Django's ``Signal.asend``, in the task.

Django's ``asend`` runs the sync receivers in one ``sync_to_async`` call and
gathers the async receivers into new tasks. Tasks spawned inside an
``async_atomic`` block are refused by the transaction guard, so here the async
receivers are awaited **in the calling task**, one after another, in
registration order: they run on the task's connection, inside its
transaction. Sync receivers run as ``asend`` runs them: all of them, in order,
in one ``sync_to_async`` call (a thread; their queries use Django's sync
connection, outside the task's transaction). The return value is ``asend``'s:
``[(receiver, response), ...]``, sync receivers first.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.dispatch import Signal
from django.dispatch.dispatcher import NO_RECEIVERS

__all__ = ["asend"]


async def asend(signal: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    """Send ``signal`` as Django's ``Signal.asend`` would, with async receivers
    awaited in the calling task (see the module docstring)."""
    if (
        not signal.receivers
        or signal.sender_receivers_cache.get(sender) is NO_RECEIVERS
    ):
        return []
    sync_receivers, async_receivers = signal._live_receivers(sender)
    responses: list[tuple[Any, Any]] = []
    if sync_receivers:

        def sync_send() -> list[tuple[Any, Any]]:
            return [
                (receiver, receiver(signal=signal, sender=sender, **named))
                for receiver in sync_receivers
            ]

        responses = await sync_to_async(sync_send)()
    for receiver in async_receivers:
        responses.append(
            (receiver, await receiver(signal=signal, sender=sender, **named))
        )
    return responses
