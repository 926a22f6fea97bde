"""A loop that ends with pools open: no hang, nothing left (issue 10, item 1).

Each scenario runs as a script in a fresh interpreter, as users run them
(``asyncio.run`` in a script, ``async_to_sync`` per call as under WSGI and in
management commands, Django's threaded development server), bounded by a
timeout with ``faulthandler`` dumping the stacks if it hangs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.fix_db import wait_for_backends

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "async-db-shutdown"

PRELUDE = """\
import asyncio, faulthandler, os, sys
faulthandler.dump_traceback_later(40, exit=True)
import django
from django.conf import settings
from async_db._embedded import settings_dict_from_dsn
base = settings_dict_from_dsn(os.environ["TEST_DSN"], application_name="{app}")
tiny = settings_dict_from_dsn(os.environ["TEST_DSN"], application_name="{app}")
tiny["OPTIONS"]["pool"] = {{"min_size": 0, "max_size": 2, "timeout": 5}}
pooled = settings_dict_from_dsn(os.environ["TEST_DSN"], application_name="{app}")
pooled["OPTIONS"]["pool"] = {{"min_size": 2, "max_size": 4, "timeout": 5}}
settings.configure(
    DATABASES={{"default": base, "tiny": tiny, "pooled": pooled}},
    ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="x", DEBUG=False,
)
django.setup()
from async_db import async_connections, aclose_old_connections

# -X dev turns on asyncio's debug mode, which also reports any step slower than
# 0.1 s: on a loaded machine that is timing, not what these scripts check.
import logging
logging.getLogger("asyncio").addFilter(
    lambda record: not record.getMessage().startswith("Executing ")
)

async def query(conn, sql="SELECT 1"):
    async with conn.cursor() as cur:
        await cur.execute(sql)
        return await cur.fetchone()
"""


def run_script(dsn: str, body: str, *flags: str) -> subprocess.CompletedProcess[str]:
    source = PRELUDE.format(app=APP_NAME) + textwrap.dedent(body)
    env = {**os.environ, "TEST_DSN": dsn, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, *flags, "-c", source],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture
def no_script_backends(observer: Any) -> Any:
    yield
    assert wait_for_backends(observer, 0, app_name=APP_NAME) == []


# The sequence: a held connection, one returned and reused by another
# task, one taken again; the script never calls close_pools().
REUSE_SEQUENCE = """
async def query_in_new_task(alias):
    await query(async_connections[alias])

async def test():
    conn = async_connections["tiny"]; await query(conn)
    held, release = asyncio.Event(), asyncio.Event()
    async def hold():
        await query(async_connections["tiny"]); held.set(); await release.wait()
    h = asyncio.create_task(hold()); await held.wait()
    await aclose_old_connections()
    await asyncio.create_task(query_in_new_task("tiny"))
    await query(conn)
    release.set(); await h

async def main():
    await asyncio.create_task(test())

for _ in range(5):
    asyncio.run(main())
print("exited")
"""


def test_asyncio_run_with_open_pool_exits(dsn: str, no_script_backends: None) -> None:
    result = run_script(dsn, REUSE_SEQUENCE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "exited"
    assert result.stderr == ""


def test_asyncio_run_under_dev_mode_prints_nothing(
    dsn: str, no_script_backends: None
) -> None:
    result = run_script(dsn, REUSE_SEQUENCE, "-X", "dev", "-W", "error")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == "exited"


ASYNC_TO_SYNC_CALLS = """
from asgiref.sync import async_to_sync
from async_db import async_atomic

@async_to_sync
async def handle(i):
    conn = async_connections["pooled"]
    # What the previous call left was undone: its session change, its cursor.
    state = await query(
        conn, "SELECT current_setting('application_name'), count(*) FROM pg_cursors"
    )
    async with async_atomic(using="pooled"):
        row = await query(conn, f"SELECT {i}")
    cur = conn.chunked_cursor()
    await cur.execute("SELECT generate_series(1, 10)")
    await cur.fetchmany(2)  # a WITH HOLD cursor, left open on purpose
    if sys.flags.dev_mode:
        await cur.close()  # (psycopg warns about a cursor object never closed)
    async with conn.cursor() as c:
        await c.execute("SET application_name = 'changed'")
    return row[0], state

results = [handle(i) for i in range(30)]
assert [r[0] for r in results] == list(range(30)), results
assert {r[1] for r in results} == {("{app}", 0)}, results
print("exited", len(results))
""".replace("{app}", APP_NAME)


@pytest.mark.parametrize("flags", [(), ("-X", "dev", "-W", "error")], ids=str)
def test_thirty_async_to_sync_calls_on_a_pooled_alias(
    dsn: str, flags: tuple[str, ...], no_script_backends: None
) -> None:
    result = run_script(dsn, ASYNC_TO_SYNC_CALLS, *flags)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == "exited 30"


DEVELOPMENT_SERVER = """
import threading, urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.http import JsonResponse
from django.urls import path

async def view(request):
    # An async view under WSGI: Django runs it in an event loop of its own.
    conn = async_connections["pooled"]
    (pid,) = await query(conn, "SELECT pg_backend_pid()")
    await query(conn, "SELECT pg_sleep(0.05)")
    return JsonResponse({"pid": pid})

urlpatterns = [path("", view)]

class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler)
server.set_app(WSGIHandler())
thread = threading.Thread(target=server.serve_forever, daemon=True)
thread.start()
url = f"http://127.0.0.1:{server.server_address[1]}/"

def get(_):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status

with ThreadPoolExecutor(8) as pool:
    statuses = list(pool.map(get, range(40)))
server.shutdown()
server.server_close()
assert statuses == [200] * 40, statuses
print("served", len(statuses))
"""


def test_threaded_development_server_with_a_pooled_alias(
    dsn: str, no_script_backends: None
) -> None:
    # manage.py runserver: threaded WSGI, each async view in its own loop,
    # several at once in different threads.
    result = run_script(dsn, DEVELOPMENT_SERVER)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == "served 40"


PLAIN_POOL = """
# The mechanism, with psycopg_pool alone: a worker that is resetting a returned
# connection when asyncio.run cancels it swallows the cancellation.
from psycopg_pool import AsyncConnectionPool
from async_db.backends.postgresql.pool import AsyncDatabasePool

async def slow_reset(conn):
    await conn.execute("SELECT pg_sleep(0.5)")

async def main(cls):
    pool = cls(os.environ["TEST_DSN"], min_size=1, max_size=1, reset=slow_reset,
               kwargs={{"application_name": "{app}"}})
    await pool.open(wait=True)
    conn = await pool.getconn()
    await pool.putconn(conn)   # a worker starts the reset
    await asyncio.sleep(0.1)   # ... and is still in it when main returns

asyncio.run(main({cls}))
print("exited")
"""


@pytest.mark.parametrize(
    ("cls", "hangs"),
    [("AsyncConnectionPool", True), ("AsyncDatabasePool", False)],
)
def test_the_mechanism_a_worker_swallows_its_cancellation(
    dsn: str, cls: str, hangs: bool
) -> None:
    body = PLAIN_POOL.format(app=APP_NAME, cls=cls).replace(
        "faulthandler.dump_traceback_later(40, exit=True)", ""
    )
    if hangs:
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, "-c", PRELUDE.format(app=APP_NAME) + body],
                capture_output=True,
                timeout=6,
                env={**os.environ, "TEST_DSN": dsn, "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
            )
    else:
        result = run_script(dsn, body)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "exited"
