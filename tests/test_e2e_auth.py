"""End to end over real HTTP: the native request path (issue 12, item 6).

``tests/auth_site`` under uvicorn, on a database of its own (created and
migrated for this module, dropped after): with the opt-in, async-db's session
engine and middleware and Django's ``AuthenticationMiddleware``, async views
log in (``aauthenticate``, ``alogin``: ``update_last_login`` included), read
the user (``request.auser()``) and write the session. For every request the
site records each sync ``django.db.connections`` connection created and each
query run off the event loop's thread: there are none, and the task's async
connection ran the queries. Django's own sync ``db`` engine reads the sessions
the site wrote (same table, same format).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.test_e2e_http import ROOT, _wait_until_up, free_port

APP_NAME = "async-db-e2e-auth"
DATABASE = f"test_async_db_auth_{os.getpid()}"


@contextlib.contextmanager
def serve(dsn: str, native: bool) -> Iterator[dict[str, Any]]:
    """The site under uvicorn on a fresh database (dropped after)."""
    database = f"{DATABASE}_{int(native)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')
    env = {
        **os.environ,
        "PYTHONPATH": ROOT,
        "AUTH_SITE_DSN": make_conninfo(dsn, dbname=database),
        "AUTH_SITE_APP_NAME": APP_NAME,
        "AUTH_SITE_NATIVE": "1" if native else "0",
    }
    try:
        subprocess.run(
            [sys.executable, "-m", "tests.auth_site.setup_db"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.auth_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--lifespan",
                "off",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_up(port, server)
            yield {"base": f"127.0.0.1:{port}", "env": env}
        finally:
            server.send_signal(signal.SIGINT)
            try:
                output, _ = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                output, _ = server.communicate()
            with psycopg.connect(dsn, autocommit=True) as conn:
                left = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [APP_NAME],
                ).fetchone()
            assert server.returncode == 0, output.decode(errors="replace")
            if native:
                assert left == (0,)  # every request's connection was closed
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="module")
def site(dsn: str) -> Iterator[dict[str, Any]]:
    """The native request path."""
    with serve(dsn, native=True) as served:
        yield served


class Client:
    """HTTP/1.0 over asyncio streams, keeping the session cookie."""

    def __init__(self, base: str) -> None:
        self.host, self.port = base.split(":")
        self.cookies: dict[str, str] = {}

    async def request(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, Any]]:
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [
            f"{method} {path} HTTP/1.0",  # no chunked responses
            f"Host: {self.host}",
            "Connection: close",
            f"Content-Length: {len(payload)}",
            "Content-Type: application/json",
        ]
        if self.cookies:
            lines.append(
                "Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            )
        reader, writer = await asyncio.open_connection(self.host, int(self.port))
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, content = raw.partition(b"\r\n\r\n")
        head_lines = head.decode().split("\r\n")
        for line in head_lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "set-cookie":
                cookie = value.strip().split(";")[0]
                key, _, val = cookie.partition("=")
                if val in ('""', ""):
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = val
        return int(head_lines[0].split()[1]), json.loads(content)


async def stats(base: str) -> dict[str, Any]:
    _, data = await Client(base).request("GET", "/stats/")
    return data


def django_reads_session(env: dict[str, str], key: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.auth_site.read_session", key],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


async def test_login_read_user_write_session_with_no_thread_hop(
    site: dict[str, Any],
) -> None:
    base = site["base"]
    client = Client(base)
    done = len((await stats(base))["requests"])

    # Anonymous: the session is created (a write) with the visit counter.
    status, data = await client.request("GET", "/me/")
    assert (status, data["user"], data["visits"]) == (200, None, 1)
    anonymous_key = client.cookies["sessionid"]

    # Log in: aauthenticate, alogin (a new session key, update_last_login).
    status, data = await client.request(
        "POST", "/login/", {"username": "ann", "password": "ann-pw"}
    )
    assert (status, data["user"]) == (200, "ann")
    assert client.cookies["sessionid"] != anonymous_key  # alogin cycled the key

    # request.auser() reads the user through the session; the visit counter
    # survived the key change; last_login was written by the login.
    status, data = await client.request("GET", "/me/")
    assert (status, data["user"], data["visits"]) == (200, "ann", 2)
    assert data["last_login"] is not None

    # A wrong password: no user, nothing changes.
    status, data = await Client(base).request(
        "POST", "/login/", {"username": "ann", "password": "wrong"}
    )
    assert (status, data["user"]) == (401, None)

    # Django's own sync engine reads the session the site wrote.
    shared = django_reads_session(site["env"], client.cookies["sessionid"])
    assert shared["exists"] is True
    assert shared["data"]["visits"] == 2
    assert shared["data"]["_auth_user_backend"] == (
        "django.contrib.auth.backends.ModelBackend"
    )
    assert not django_reads_session(site["env"], anonymous_key)["exists"]

    # Log out: the session is flushed (deleted); the next request is anonymous.
    status, _ = await client.request("POST", "/logout/")
    assert status == 200
    status, data = await client.request("GET", "/me/")
    assert (status, data["user"], data["visits"]) == (200, None, 1)

    recorded = (await stats(base))["requests"][done:]
    assert [r["path"] for r in recorded] == [
        "/me/",
        "/login/",
        "/me/",
        "/login/",
        "/logout/",
        "/me/",
    ]
    for r in recorded:
        # Zero thread hops for database work: no sync connection was created,
        # no query ran off the event loop's thread...
        assert r["sync_connections"] == [], r
        assert r["offloop"] == [], r
        # ... and the task's async connection ran the queries.
        assert r["queries"], r
    me, login = recorded[0], recorded[1]
    assert any(q.startswith('INSERT INTO "django_session"') for q in me["queries"])
    assert any(q.startswith('SELECT "auth_user"') for q in login["queries"])
    # update_last_login, natively, and the session saved in the response phase.
    assert any(
        q.startswith('UPDATE "auth_user" SET "last_login"') for q in login["queries"]
    )
    assert any(q.startswith('UPDATE "django_session"') for q in recorded[2]["queries"])
    assert any(
        q.startswith('DELETE FROM "django_session"') for q in recorded[4]["queries"]
    )
    # Not one sync connection in the site's life.
    assert (await stats(base))["sync_connections"] == []


async def test_the_control_djangos_own_path_hops_to_threads(dsn: str) -> None:
    """The same requests on Django's own async path (no opt-in, Django's
    session engine and middleware): the recorder sees the sync connections
    its thread hops open, so the zero above is a measurement."""
    with serve(dsn, native=False) as served:
        client = Client(served["base"])
        status, data = await client.request("GET", "/me/")
        assert (status, data["visits"]) == (200, 1)
        status, data = await client.request(
            "POST", "/login/", {"username": "ann", "password": "ann-pw"}
        )
        assert (status, data["user"]) == (200, "ann")
        recorded = (await stats(served["base"]))["requests"]
    assert [r["path"] for r in recorded] == ["/me/", "/login/"]
    for r in recorded:
        assert r["sync_connections"], r  # a sync connection, in a thread
        assert r["queries"] == [], r  # nothing ran on the async connection


def test_session_engine_against_djangos(site: dict[str, Any]) -> None:
    """async-db's engine and Django's ``db`` engine share the table both ways;
    ``acycle_key``, ``aflush``, ``aclear_expired`` and Django's
    ``UpdateError``/``CreateError``, natively (no sync connection)."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.auth_site.session_checks"],
        cwd=ROOT,
        env=site["env"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    results = json.loads(out.stdout)
    assert results["sync_connections_during_native"] == []
    assert results["django_reads_created"] == {"k": [1, "two"]}
    assert results["sync_written"] == "django"
    assert results["cycled"] == [True, [1, "two"], False, True]
    assert results["update_error"] is True
    assert results["create_error"] is True
    assert results["flushed"] == [None, False]
    assert (results["expired_before"], results["expired_after"]) == (True, False)
    assert results["kept_after"] is True
