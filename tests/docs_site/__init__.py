"""What the docs' hidden blocks use to run a page's Django project files:
serve its ``urlpatterns`` (or its ASGI application) in process through
Django's own ``ASGIHandler``, as uvicorn would, against the test server.

Each request runs as Django's ASGI handler runs it under a real server: the
view in a task of its own, so the connections it used are released when the
request ends. ``DSN`` is the test server's, set by the docs test before a
page runs (for examples that connect with psycopg themselves).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from async_db._storage import wait_released

__all__ = ["DSN", "Response", "call", "running", "serve", "wait_released"]

#: The test server's DSN (``tests/test_docs_examples.py`` sets it).
DSN = ""

ASGIApp = Callable[..., Awaitable[None]]


class URLConf:
    """A urls module's stand-in (hashable: Django caches resolvers by it)."""

    def __init__(self, urlpatterns: Sequence[Any]) -> None:
        self.urlpatterns = list(urlpatterns)


@dataclass
class Response:
    """What the ASGI application sent back."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    application: ASGIApp,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
) -> Response:
    """One HTTP request through an ASGI application (a client that never
    disconnects early)."""
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    response = Response(0)

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await never  # Django cancels its disconnect listener when done.
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = {
                k.decode().lower(): v.decode() for k, v in message.get("headers", [])
            }
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")

    await application(scope, receive, send)
    return response


async def serve(
    urlpatterns: Sequence[Any],
    method: str,
    path: str,
    *,
    data: dict[str, str] | None = None,
    middleware: Sequence[str] = (),
    application: ASGIApp | None = None,
) -> Response:
    """Serve one request to ``urlpatterns`` (a urls.py's list) with Django's
    ``ASGIHandler`` and the given ``MIDDLEWARE`` (or through ``application``,
    an ASGI application wrapping Django's); ``data`` is sent as a form."""
    from django.core.handlers.asgi import ASGIHandler
    from django.test.utils import override_settings

    urlconf = URLConf(urlpatterns)
    body, headers = b"", []
    if data is not None:
        body = urlencode(data).encode()
        headers.append(("content-type", "application/x-www-form-urlencoded"))
    with override_settings(
        ROOT_URLCONF=urlconf, ALLOWED_HOSTS=["testserver"], MIDDLEWARE=list(middleware)
    ):
        app = ASGIHandler() if application is None else application
        return await call(app, method, path, body=body, headers=headers)


@asynccontextmanager
async def running(application: ASGIApp) -> AsyncIterator[list[dict[str, Any]]]:
    """Run ``application`` as an ASGI server would: the lifespan startup on
    entry, the shutdown on exit (awaited to the end). Yields the lifespan
    messages the application sent, ``lifespan.startup.complete`` first."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    answered = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        answered.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    events.put_nowait({"type": "lifespan.startup"})
    task = asyncio.create_task(application(scope, events.get, send))
    try:
        await answered.wait()
        yield sent
    finally:
        answered.clear()
        events.put_nowait({"type": "lifespan.shutdown"})
        await task
