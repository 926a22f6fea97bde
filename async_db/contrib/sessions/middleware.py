"""An async-native ``SessionMiddleware``.

Django's ``SessionMiddleware`` is a ``MiddlewareMixin``: under ASGI its
``process_request`` and ``process_response`` run in a thread
(``sync_to_async``), and ``process_response`` saves the session with the sync
``save()``, on Django's sync connection. This subclass keeps Django's sync
behaviour (WSGI) and, when the handler is async, runs the same steps in the
task: ``process_request`` (no I/O: it only builds the session store) and
:meth:`SessionMiddleware.aprocess_response`, the async twin of
``process_response`` (``asave()``, ``aget_expiry_age()``, ...). Use it in
place of Django's, with an engine whose async methods are native
(``async_db.contrib.sessions.backends.db``)::

    MIDDLEWARE = [
        ...,
        "async_db.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        ...,
    ]
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import (
    SessionMiddleware as DjangoSessionMiddleware,
)
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

__all__ = ["SessionMiddleware"]


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's ``SessionMiddleware``; under an async handler, its request and
    response phases run in the task, the session saved with ``asave()``."""

    async def __acall__(self, request: Any) -> Any:
        """``MiddlewareMixin.__acall__`` without its threads."""
        # Django's process_request() returns None: it only builds the store.
        self.process_request(request)
        get_response: Any = self.get_response
        response = await get_response(request)
        return await self.aprocess_response(request, response)

    async def aprocess_response(self, request: Any, response: Any) -> Any:
        """Async twin of ``SessionMiddleware.process_response()``."""
        try:
            accessed = request.session.accessed
            modified = request.session.modified
            empty = request.session.is_empty()
        except AttributeError:
            return response
        # First check if we need to delete this cookie.
        # The session should be deleted only if the session is entirely empty.
        if settings.SESSION_COOKIE_NAME in request.COOKIES and empty:
            response.delete_cookie(
                settings.SESSION_COOKIE_NAME,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
                samesite=settings.SESSION_COOKIE_SAMESITE,
            )
            need_vary_cookie = True
        else:
            # If the session was accessed, it must be varied on, regardless of
            # whether it was modified or will be saved.
            need_vary_cookie = accessed
            if (modified or settings.SESSION_SAVE_EVERY_REQUEST) and not empty:
                if await request.session.aget_expire_at_browser_close():
                    max_age = None
                    expires = None
                else:
                    max_age = await request.session.aget_expiry_age()
                    expires_time = time.time() + max_age
                    expires = http_date(expires_time)
                # Save the session data and refresh the client cookie.
                # Skip session save for 5xx responses.
                if response.status_code < 500:
                    try:
                        await request.session.asave()
                    except UpdateError:
                        raise SessionInterrupted(
                            "The request's session was deleted before the "
                            "request completed. The user may have logged "
                            "out in a concurrent request, for example."
                        ) from None
                    response.set_cookie(
                        settings.SESSION_COOKIE_NAME,
                        request.session.session_key,
                        max_age=max_age,
                        expires=expires,
                        domain=settings.SESSION_COOKIE_DOMAIN,
                        path=settings.SESSION_COOKIE_PATH,
                        secure=settings.SESSION_COOKIE_SECURE or None,
                        httponly=settings.SESSION_COOKIE_HTTPONLY or None,
                        samesite=settings.SESSION_COOKIE_SAMESITE,
                    )
                    # With a session cookie set, it must be varied on.
                    need_vary_cookie = True
        if need_vary_cookie:
            patch_vary_headers(response, ("Cookie",))
        return response
