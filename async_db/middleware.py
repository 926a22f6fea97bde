"""``ATOMIC_REQUESTS`` for async views.

Django refuses ``ATOMIC_REQUESTS`` for async views ("You cannot use
ATOMIC_REQUESTS with async views."). With this middleware, an async view runs
inside ``async_atomic(using=alias)`` for every alias whose ``DATABASES`` entry
has ``"ATOMIC_REQUESTS": True``, except the aliases excluded with Django's own
``@transaction.non_atomic_requests`` decorator. As in Django, the transaction
covers the view only (not the other middleware, not template rendering), it
rolls back when the view raises, and ``on_commit`` callbacks run once it
commits. Sync views are left to Django.

Put it **last** in ``MIDDLEWARE``: it calls the view itself from
``process_view``, so view middleware after it would not run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponseBase

from async_db.transaction import async_atomic

__all__ = ["AsyncAtomicRequestsMiddleware", "atomic_request_aliases"]


def atomic_request_aliases(view: Callable[..., Any]) -> list[str]:
    """The aliases whose transaction should wrap ``view`` (Django's rule)."""
    from async_db import async_connections

    excluded: set[str] = getattr(view, "_non_atomic_requests", set())
    return [
        alias
        for alias, settings_dict in async_connections.settings.items()
        if settings_dict["ATOMIC_REQUESTS"] and alias not in excluded
    ]


class AsyncAtomicRequestsMiddleware:
    """Run each async view in one transaction per ``ATOMIC_REQUESTS`` alias."""

    sync_capable = False
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]
    ) -> None:
        if not iscoroutinefunction(get_response):
            raise ImproperlyConfigured(
                "AsyncAtomicRequestsMiddleware needs an async middleware chain "
                "(run Django under ASGI, with async-capable middleware)."
            )
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return await self.get_response(request)

    async def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if not iscoroutinefunction(view_func):
            return None  # Django's own ATOMIC_REQUESTS handles sync views.
        aliases = atomic_request_aliases(view_func)
        if not aliases:
            return None
        async with AsyncExitStack() as stack:
            for alias in aliases:
                await stack.enter_async_context(async_atomic(using=alias))
            response: HttpResponseBase | None = await view_func(
                request, *view_args, **view_kwargs
            )
        if response is None:
            # Returning None here would make Django call the view again.
            name = getattr(view_func, "__qualname__", repr(view_func))
            raise ValueError(
                f"The view {view_func.__module__}.{name} didn't return an "
                f"HttpResponse object. It returned None instead."
            )
        return response
