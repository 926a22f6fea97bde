"""Connections are released when their task ends: Django's ASGI handler, and
a plain asyncio.run() script."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from async_db import async_connections
from tests.fix_db import await_backends, wait_for_backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def asgi_get(app: Any, target: str) -> tuple[int, bytes]:
    """GET ``target`` (path and query) through an ASGI app, in-process."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        # A client that stays connected until the whole response is sent.
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    )
    return status, body


async def test_asgi_request_releases_its_connection(observer: Any) -> None:
    from tests import asgi_urls

    with override_settings(ROOT_URLCONF="tests.asgi_urls", ALLOWED_HOSTS=["*"]):
        app = ASGIHandler()
        pids = []
        for _ in range(3):
            status, body = await asgi_get(app, "/pid/")
            assert status == 200
            pids.append(json.loads(body)["pid"])
            # Released at the end of the view's task: the server has none left.
            assert await await_backends(observer, 0) == []
            assert asgi_urls.seen["wrapper"].connection is None
    # Each request ran on a connection of its own.
    assert len(set(pids)) == 3
    # The test task itself never touched the alias.
    assert async_connections.all(initialized_only=True) == []


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from django.conf import settings
    from async_db import async_connections
    from async_db._embedded import settings_dict_from_dsn

    settings.configure(DATABASES={"default": settings_dict_from_dsn(
        sys.argv[1], application_name="async-db-tests")})

    async def child():
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute("SELECT pg_backend_pid()")
            return (await cursor.fetchone())[0]

    async def main():
        async with async_connections["default"].cursor() as cursor:
            await cursor.execute("SELECT 1")
        pids = await asyncio.gather(child(), child())
        print(len(set(pids)))

    asyncio.run(main())
    """
)


def test_asyncio_run_script_exits_cleanly(dsn: str, observer: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", SCRIPT, dsn],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    # No "Task was destroyed", no ResourceWarning, nothing at all on stderr.
    assert result.stderr == ""
    assert wait_for_backends(observer, 0) == []
