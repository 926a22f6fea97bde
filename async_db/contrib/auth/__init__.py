"""Native ``aauthenticate()``/``alogin()``/``alogout()``: signals in the task.

Async twins of ``django.contrib.auth.aauthenticate``, ``alogin`` and
``alogout``. Django's send ``user_login_failed``/``user_logged_in``/
``user_logged_out`` with ``Signal.asend``, which runs the
sync receivers in a thread and gathers the async ones into new tasks; the
receiver Django itself connects, ``update_last_login``, then saves the user
with the sync ORM in that thread. Here the signals go through :func:`asend`:
Django's receivers that have a native equivalent (``update_last_login`` ->
:func:`aupdate_last_login`) are awaited in the calling task, on its
connection; async receivers are awaited in the task, one after another;
other sync receivers run as ``asend`` runs them (in a thread).

The session calls are ``request.session``'s async methods: native with the
session engine ``async_db.contrib.sessions.backends.db``. ``request.auser()``
and the backends' ``aauthenticate()`` are Django's, unchanged: with the
opt-in (``ASYNC_DB = {"NATIVE_ORM": True}``) their queries (``aget``,
``aget_by_natural_key``, ``acheck_password``'s ``asave``) are native. The
opt-in also makes ``django.contrib.auth.aauthenticate``/``alogin``/
``alogout`` these functions.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.dispatch import Signal
from django.dispatch.dispatcher import NO_RECEIVERS
from django.views.decorators.debug import sensitive_variables

__all__ = ["aauthenticate", "alogin", "alogout", "asend", "aupdate_last_login"]


async def aupdate_last_login(sender: Any, user: Any, **kwargs: Any) -> None:
    """Async twin of ``django.contrib.auth.models.update_last_login``: the
    user's ``last_login`` saved natively (``update_fields=["last_login"]``)."""
    from django.utils import timezone

    from async_db.models.base import asave_instance

    user.last_login = timezone.now()
    await asave_instance(user, update_fields=["last_login"])


@functools.cache
def _async_equivalents() -> dict[Any, Callable[..., Awaitable[Any]]]:
    """Django's sync receivers -> their native async equivalents."""
    from django.contrib.auth.models import update_last_login

    return {update_last_login: aupdate_last_login}


async def asend(signal: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    """``signal.asend(sender, **named)`` with every receiver that can be run
    in the task run there: Django's receivers with a native equivalent (see
    :func:`_async_equivalents`) and async receivers, awaited one after
    another; the other sync receivers in one ``sync_to_async`` call each run
    of them, in order. Responses: sync receivers first, then async ones, as
    ``Signal.asend``."""
    if (
        not signal.receivers
        or signal.sender_receivers_cache.get(sender) is NO_RECEIVERS
    ):
        return []
    sync_receivers, async_receivers = signal._live_receivers(sender)
    equivalents = _async_equivalents()
    responses: list[tuple[Any, Any]] = []
    batch: list[Any] = []

    async def flush() -> None:
        if not batch:
            return
        receivers = list(batch)
        batch.clear()

        def sync_send() -> list[tuple[Any, Any]]:
            return [
                (receiver, receiver(signal=signal, sender=sender, **named))
                for receiver in receivers
            ]

        responses.extend(await sync_to_async(sync_send)())

    for receiver in sync_receivers:
        equivalent = equivalents.get(receiver)
        if equivalent is None:
            batch.append(receiver)
            continue
        await flush()
        responses.append(
            (receiver, await equivalent(signal=signal, sender=sender, **named))
        )
    await flush()
    for receiver in async_receivers:
        responses.append(
            (receiver, await receiver(signal=signal, sender=sender, **named))
        )
    return responses


@sensitive_variables("credentials")
async def aauthenticate(request: Any = None, **credentials: Any) -> Any:
    """Async twin of ``django.contrib.auth.aauthenticate()``, with
    ``user_login_failed`` sent by :func:`asend` (the backends' own
    ``aauthenticate`` are Django's: ``ModelBackend``'s queries are native
    under the opt-in)."""
    from django.contrib.auth import (  # type: ignore[attr-defined]
        _clean_credentials,
        _get_compatible_backends,
    )
    from django.contrib.auth.signals import user_login_failed
    from django.core.exceptions import PermissionDenied

    for backend, backend_path in _get_compatible_backends(request, **credentials):
        try:
            user = await backend.aauthenticate(request, **credentials)
        except PermissionDenied:
            # This backend says to stop in our tracks - this user should not be
            # allowed in at all.
            break
        if user is None:
            continue
        # Annotate the user object with the path of the backend.
        user.backend = backend_path
        return user

    # The credentials supplied are invalid to all backends, fire signal.
    await asend(
        user_login_failed,
        sender="django.contrib.auth",
        credentials=_clean_credentials(credentials),
        request=request,
    )
    return None


async def alogin(request: Any, user: Any, backend: str | None = None) -> None:
    """Async twin of ``django.contrib.auth.alogin()`` (Django 5.2), with
    ``user_logged_in`` sent by :func:`asend`."""
    from django.contrib.auth import (  # type: ignore[attr-defined]
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        _aget_user_session_key,
        _get_backend_from_user,
    )
    from django.contrib.auth.signals import user_logged_in
    from django.middleware.csrf import rotate_token
    from django.utils import deprecation
    from django.utils.crypto import constant_time_compare

    # RemovedInDjango61Warning: When the deprecation ends, replace with:
    # session_auth_hash = user.get_session_auth_hash()
    session_auth_hash = ""
    # RemovedInDjango61Warning.
    if user is None:
        warnings.warn(
            "Fallback to request.auser() when user is None will be removed.",
            deprecation.RemovedInDjango61Warning,  # type: ignore[attr-defined]
            stacklevel=2,
        )
        user = await request.auser()
    # RemovedInDjango61Warning.
    if hasattr(user, "get_session_auth_hash"):
        session_auth_hash = user.get_session_auth_hash()

    if await request.session.ahas_key(SESSION_KEY):
        if await _aget_user_session_key(request) != user.pk or (
            session_auth_hash
            and not constant_time_compare(
                await request.session.aget(HASH_SESSION_KEY, ""),
                session_auth_hash,
            )
        ):
            # To avoid reusing another user's session, create a new, empty
            # session if the existing session corresponds to a different
            # authenticated user.
            await request.session.aflush()
    else:
        await request.session.acycle_key()

    backend = _get_backend_from_user(user=user, backend=backend)

    await request.session.aset(SESSION_KEY, user._meta.pk.value_to_string(user))
    await request.session.aset(BACKEND_SESSION_KEY, backend)
    await request.session.aset(HASH_SESSION_KEY, session_auth_hash)
    if hasattr(request, "user"):
        request.user = user
    rotate_token(request)
    await asend(user_logged_in, sender=user.__class__, request=request, user=user)


async def alogout(request: Any) -> None:
    """Async twin of ``django.contrib.auth.alogout()``, with
    ``user_logged_out`` sent by :func:`asend`."""
    from django.contrib.auth.signals import user_logged_out

    # Dispatch the signal before the user is logged out so the receivers have a
    # chance to find out *who* logged out.
    user = getattr(request, "auser", None)
    if user is not None:
        user = await user()
    if not getattr(user, "is_authenticated", True):
        user = None
    await asend(user_logged_out, sender=user.__class__, request=request, user=user)
    await request.session.aflush()
    if hasattr(request, "user"):
        from django.contrib.auth.models import AnonymousUser

        request.user = AnonymousUser()
