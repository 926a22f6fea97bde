"""Database fixtures: a real PostgreSQL for every test, never a mock.

The server is ``$ASYNC_DB_DSN`` when set (or ``--dsn``); otherwise an embedded
throwaway server started with ``pgserver`` for this run and deleted after it.
Django settings are configured once from that DSN. A session-wide autocommit
*observer* connection (sync psycopg, its own application_name) creates tables
and checks what the server really holds. After every test the server must have
no backend left from the test's connections (``application_name`` is
``async-db-tests``): a leaked connection fails the test that leaked it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest

from async_db._embedded import DSN_ENV, EmbeddedServer
from async_db._embedded import settings_dict_from_dsn as _settings_dict_from_dsn

TEST_APP_NAME = "async-db-tests"
OBSERVER_APP_NAME = "async-db-observer"
POOLED_APP_NAME = "async-db-tests-pooled"

_embedded: list[Any] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dsn",
        default=os.environ.get(DSN_ENV),
        help=f"PostgreSQL DSN to test against (default: ${DSN_ENV}; "
        "unset: an embedded throwaway server)",
    )


def pytest_configure(config: pytest.Config) -> None:
    dsn = config.getoption("--dsn")
    if not dsn:
        server = EmbeddedServer()
        _embedded.append(server)
        dsn = server.dsn
    config.stash[_dsn_key] = dsn
    _warm_up(dsn)
    _configure_django(dsn)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _embedded:
        _embedded.pop().stop()


def pytest_report_header(config: pytest.Config) -> str:
    kind = "embedded pgserver" if _embedded else f"external (${DSN_ENV} or --dsn)"
    return f"async-db test database: {kind}"


_dsn_key = pytest.StashKey[str]()


def _warm_up(dsn: str) -> None:
    """Stop the whole run with one clear message if the server is unreachable."""
    try:
        with psycopg.connect(dsn, connect_timeout=10):
            pass
    except psycopg.Error as exc:
        pytest.exit(f"cannot connect to the test database: {exc}", returncode=2)


def settings_dict_from_dsn(dsn: str) -> dict[str, Any]:
    """The tests' ``DATABASES['default']``: tagged so leaks can be found. The
    server is a throwaway one (or ``$ASYNC_DB_DSN``, a database meant for tests):
    ``TEST["NAME"]`` says the configured database *is* the test database."""
    entry = _settings_dict_from_dsn(dsn, application_name=TEST_APP_NAME)
    entry["TEST"] = {"NAME": entry["NAME"]}
    return entry


def _pooled(entry: dict[str, Any]) -> dict[str, Any]:
    entry["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 4, "timeout": 5}
    entry["OPTIONS"]["application_name"] = POOLED_APP_NAME
    return entry


def _configure_django(dsn: str) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            USE_TZ=True,
            TIME_ZONE="UTC",
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "tests.ormapp",
            ],
            DATABASES={
                "default": settings_dict_from_dsn(dsn),
                "other": settings_dict_from_dsn(dsn),
                "pooled": _pooled(settings_dict_from_dsn(dsn)),
            },
        )
        django.setup()


@pytest.fixture(scope="session")
def dsn(pytestconfig: pytest.Config) -> str:
    return pytestconfig.stash[_dsn_key]


class Observer:
    """A sync autocommit connection that reconnects if the server dropped it
    (fault tests restart the server or terminate backends)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._dsn, autocommit=True, application_name=OBSERVER_APP_NAME
        )

    def execute(self, query: Any, params: Any = None) -> psycopg.Cursor[Any]:
        if self._conn.closed:
            self._conn = self._connect()
        try:
            return self._conn.execute(query, params)
        except psycopg.OperationalError:
            if not self._conn.closed:
                raise
            self._conn = self._connect()
            return self._conn.execute(query, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def close(self) -> None:
        self._conn.close()


@pytest.fixture(scope="session")
def observer(dsn: str) -> Iterator[Any]:
    """An autocommit connection for setup and for checking the server's state."""
    conn = Observer(dsn)
    try:
        yield conn
    finally:
        conn.close()


def configured(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with Django's defaults filled in (AUTOCOMMIT, CONN_MAX_AGE, ...)."""
    from django.db.utils import ConnectionHandler

    return ConnectionHandler().configure_settings({"default": entry})["default"]


@pytest.fixture
def db_settings(dsn: str) -> dict[str, Any]:
    """A fresh ``DATABASES['default']`` entry (with Django's defaults) per test."""
    return configured(copy.deepcopy(settings_dict_from_dsn(dsn)))


@pytest.fixture
def make_connection(
    db_settings: dict[str, Any],
) -> Iterator[Callable[..., Any]]:
    """Build wrappers for this test; the test closes them (leaks fail it)."""
    from async_db._engine import create_connection

    def make(alias: str = "default", **overrides: Any) -> Any:
        entry = copy.deepcopy(db_settings)
        options = overrides.pop("OPTIONS", None)
        entry.update(overrides)
        if options is not None:
            entry["OPTIONS"] = {**entry["OPTIONS"], **options}
        return create_connection(alias, entry)

    yield make


@pytest.fixture
async def connection(make_connection: Callable[..., Any]) -> AsyncIterator[Any]:
    """A connected wrapper for the 'default' alias, closed after the test."""
    conn = make_connection()
    await conn.ensure_connection()
    try:
        yield conn
    finally:
        await conn.close()


_table_counter = iter(range(1, 1_000_000))


@pytest.fixture
def table(observer: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh ``(id serial, name text unique, value int, note text)`` table."""
    name = f"async_db_t{os.getpid()}_{next(_table_counter)}"
    observer.execute(
        f"CREATE TABLE {name} (id serial PRIMARY KEY, name text UNIQUE, "
        f"value integer, note text)"
    )
    try:
        yield name
    finally:
        observer.execute(f"DROP TABLE IF EXISTS {name}")


def our_backends(
    observer: psycopg.Connection[Any], app_name: str = TEST_APP_NAME
) -> list[tuple[int, str]]:
    """(pid, state) of every backend opened by the tests' connections (by
    default the unpooled ones; the global 'pooled' alias uses
    ``POOLED_APP_NAME``)."""
    cur = observer.execute(
        "SELECT pid, coalesce(state, '') FROM pg_stat_activity "
        "WHERE application_name = %s",
        [app_name],
    )
    return [(int(pid), str(state)) for pid, state in cur.fetchall()]


def wait_for_backends(
    observer: psycopg.Connection[Any],
    expected: int,
    timeout: float = 5.0,
    app_name: str = TEST_APP_NAME,
) -> list[tuple[int, str]]:
    """Poll until exactly ``expected`` of our backends remain (a closed client's
    backend exits asynchronously on the server); return the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        backends = our_backends(observer, app_name)
        if len(backends) == expected or time.monotonic() > deadline:
            return backends
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def no_leaked_backends(observer: psycopg.Connection[Any]) -> Iterator[None]:
    """Fail a test that leaves a backend of ours on the server (pools are
    closed by the fixtures that open them, before this check)."""
    yield
    for app_name in (TEST_APP_NAME, POOLED_APP_NAME):
        leaked = wait_for_backends(observer, 0, app_name=app_name)
        assert not leaked, f"test leaked {app_name} backends (pid, state): {leaked}"


@pytest.fixture(autouse=True)
async def no_pending_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks pending on its event loop."""
    yield
    from async_db._storage import wait_released

    current = asyncio.current_task()
    # Connection releases started at task end are ours: let them finish.
    async with asyncio.timeout(10):
        await wait_released()
    for _ in range(3):
        # Let tasks that are finishing (cancelled, returning) complete.
        await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in pending:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*pending, return_exceptions=True)
    assert not pending, f"test left pending tasks: {pending}"


def handler_databases(dsn: str) -> dict[str, dict[str, Any]]:
    """Aliases for handler tests: 'default' and 'other' unpooled, 'pooled' with
    a small pool (2 s timeout so exhaustion tests stay short)."""
    base = settings_dict_from_dsn(dsn)
    pooled = copy.deepcopy(base)
    pooled["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 4, "timeout": 2}
    return {"default": base, "other": copy.deepcopy(base), "pooled": pooled}


@pytest.fixture
async def handler(dsn: str) -> AsyncIterator[Any]:
    """An AsyncConnectionHandler of its own; pools closed after the test."""
    from async_db import AsyncConnectionHandler
    from async_db._storage import wait_released

    h = AsyncConnectionHandler(handler_databases(dsn))
    try:
        yield h
    finally:
        await wait_released()
        await h.close_pools()


async def await_backends(
    observer: psycopg.Connection[Any], expected: int, within: float = 5.0
) -> list[tuple[int, str]]:
    """``wait_for_backends`` that lets the event loop run between polls."""
    deadline = time.monotonic() + within
    while True:
        backends = our_backends(observer)
        if len(backends) == expected or time.monotonic() > deadline:
            return backends
        await asyncio.sleep(0.01)


class SQLLog:
    """The exact SQL a connection sends, from libpq's protocol trace (psycopg's
    ``acommands`` idea, but nothing patched: the driver reports it)."""

    def __init__(self) -> None:
        self._file: Any = None
        self._conn: Any = None

    async def start(self, wrapper: Any) -> None:
        from psycopg import pq

        await wrapper.ensure_connection()
        self._conn = wrapper.connection
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._conn.pgconn.trace(self._file.fileno())
        self._conn.pgconn.set_trace_flags(
            pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE
        )

    def stop(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.pgconn.untrace()
        self._conn = None

    @property
    def statements(self) -> list[str]:
        """Every Query/Parse sent so far, in order."""
        self._file.flush()
        self._file.seek(0)
        statements = []
        for line in self._file.read().decode().splitlines():
            fields = line.split("\t")
            sent = len(fields) >= 4 and fields[0] == "F"
            if sent and fields[2] in ("Query", "Parse"):
                text = fields[3].strip()
                if fields[2] == "Parse":
                    text = text.split(" ", 1)[1] if " " in text else text
                statements.append(text[1:-1] if text.startswith('"') else text)
        return statements

    def close(self) -> None:
        self.stop()
        if self._file is not None:
            self._file.close()


@pytest.fixture
def sql_log() -> Iterator[SQLLog]:
    log = SQLLog()
    try:
        yield log
    finally:
        log.close()


@pytest.fixture
async def global_pools() -> AsyncIterator[None]:
    """For tests using the global handler's 'pooled' alias: its pool is bound
    to this test's event loop, so it is closed when the test ends."""
    from async_db import async_connections
    from async_db._storage import wait_released

    try:
        yield
    finally:
        await wait_released()
        await async_connections.close_pools()


@pytest.fixture
def embedded_server() -> Any:
    """The embedded server of this run; tests that restart it skip (with this
    reason) when the suite runs against an external server."""
    if not _embedded:
        pytest.skip(
            "needs the embedded throwaway server (it restarts it); this run uses "
            f"an external server (${DSN_ENV}); CI's embedded pass runs it"
        )
    return _embedded[0]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.cancellation import PAIRS

    if PAIRS:
        scenarios = len({name for name, _ in PAIRS})
        terminalreporter.write_line(
            f"cancellation: {len(PAIRS)} (scenario, cancel point) pairs tested "
            f"across {scenarios} scenarios"
        )


async def settled_pool_stats(handler: Any, alias: str) -> dict[str, int]:
    """Pool stats once every released connection is back in the pool (the
    release and the pool's reset run in other tasks). A bounded wait: if a
    connection is really held, the last reading is returned for the test's
    assertion to fail on."""
    from async_db._storage import wait_released

    await wait_released()
    pool = handler.pools.peek(alias)
    deadline = time.monotonic() + 5
    while True:
        stats = dict(pool.get_stats())
        if stats["pool_size"] == stats["pool_available"] or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.005)
