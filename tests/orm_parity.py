"""Parity harness: the same queryset evaluated natively and by Django's sync ORM.

``await parity(lambda: Book.objects.filter(...))`` builds the queryset twice
(querysets cache results), evaluates one natively in the test's task (while
counting sync connections opened: there must be none) and the other with the
sync ORM in a ``sync_to_async`` thread, then compares a normal form of both
results: values *and* Python types, order, model field values, annotations,
``_state.db``/``_state.adding``, and the objects ``select_related`` cached.
The sync thread's connection is closed after each evaluation.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models import Model


def normal(value: Any, _seen: frozenset[int] = frozenset()) -> Any:
    """A comparable form of a result: types kept, model instances unpacked
    (a cached relation back to an instance being unpacked is a reference)."""
    if isinstance(value, Model):
        if id(value) in _seen:
            return ("ref", value._meta.label, value.pk)
        seen = _seen | {id(value)}
        fields = {
            k: normal(v, seen)
            for k, v in sorted(value.__dict__.items())
            if k != "_state"
        }
        cached = {
            name: normal(obj, seen)
            for name, obj in sorted(value._state.fields_cache.items())
        }
        return (
            "model",
            value._meta.label,
            fields,
            value._state.db,
            value._state.adding,
            cached,
        )
    if isinstance(value, dict):
        return ("dict", {k: normal(v, _seen) for k, v in value.items()}, list(value))
    if isinstance(value, tuple):
        names = getattr(value, "_fields", None)
        return (type(value).__name__, names, [normal(v, _seen) for v in value])
    if isinstance(value, list):
        return ("list", [normal(v, _seen) for v in value])
    if isinstance(value, datetime.datetime):
        return ("datetime", value, repr(value.tzinfo))
    return (type(value).__name__, value)


class SyncConnectionCounter:
    """Counts sync connections Django opens while active (any thread)."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def _receiver(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self.opened.append(connection.alias)

    def __enter__(self) -> SyncConnectionCounter:
        connection_created.connect(self._receiver)
        return self

    def __exit__(self, *exc: object) -> None:
        connection_created.disconnect(self._receiver)


async def run_sync(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with the sync ORM in a thread; close that thread's
    connections afterwards."""

    def call() -> Any:
        try:
            return fn()
        finally:
            connections.close_all()

    return await sync_to_async(call, thread_sensitive=True)()


async def native_and_sync(
    native_eval: Callable[[], Awaitable[Any]], sync_eval: Callable[[], Any]
) -> tuple[Any, Any]:
    """Evaluate both ways; assert the native side opened no sync connection."""
    with SyncConnectionCounter() as counter:
        native_result = await native_eval()
    assert counter.opened == [], (
        f"native call opened sync connections: {counter.opened}"
    )
    assert all(
        conn.connection is None for conn in connections.all(initialized_only=True)
    )
    sync_result = await run_sync(sync_eval)
    return native_result, sync_result


async def parity(make_qs: Callable[[], Any], in_atomic: bool = False) -> list[Any]:
    """``async for`` over ``make_qs()`` natively equals ``list(make_qs())``
    with the sync ORM; return the native result. ``in_atomic``: the native
    side runs inside an ``async_atomic`` block (Django's trick of re-running
    tests under another precondition)."""
    from async_db import async_atomic
    from async_db.models import native

    async def native_eval() -> list[Any]:
        if in_atomic:
            async with async_atomic():
                return [obj async for obj in native(make_qs())]
        return [obj async for obj in native(make_qs())]

    native_result, sync_result = await native_and_sync(
        native_eval, lambda: list(make_qs())
    )
    assert normal(native_result) == normal(sync_result)
    return native_result


async def method_parity(
    make_qs: Callable[[], Any], method: str, *args: Any, **kwargs: Any
) -> Any:
    """``await native(qs).a<method>(...)`` equals ``qs.<method>(...)`` (or
    raises the same exception type and message)."""
    from async_db.models import native

    async def native_eval() -> Any:
        try:
            return await getattr(native(make_qs()), f"a{method}")(*args, **kwargs)
        except Exception as exc:
            return ("raised", type(exc), str(exc))

    def sync_eval() -> Any:
        try:
            return getattr(make_qs(), method)(*args, **kwargs)
        except Exception as exc:
            return ("raised", type(exc), str(exc))

    native_result, sync_result = await native_and_sync(native_eval, sync_eval)
    assert normal(native_result) == normal(sync_result)
    return native_result
