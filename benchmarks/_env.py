"""The world the comparison scenarios share: Django settings, the lookup table,
the contenders' pools, and an observer counting server backends.

Every contender gets the same server, the same table and the same pool size
(:data:`POOL_SIZE`); each one tags its sessions with its own
``application_name`` (unique per run), so the observer counts exactly its
backends, even while another run shares the server.

Django is configured once per process by :func:`setup_django` with three
aliases on the benchmark database:

* ``default``: Django's sync backend (``sync_to_async`` and ORM contenders);
* ``pooled``: async-db with ``OPTIONS["pool"]`` of :data:`POOL_SIZE`;
* ``unpooled``: async-db, one connection per task.

Every session runs with ``synchronous_commit=off``: commits don't wait for the
WAL flush (about 250 us on the 2-core development VM), so the transactions
scenario measures the client stacks rather than the disk.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from async_db._embedded import settings_dict_from_dsn

#: Unique per run: tables and application names of two runs never collide.
RUN_TAG = secrets.token_hex(4)
ITEMS_TABLE = f"bench_items_{RUN_TAG}"
#: The cascade-delete tables (``benchmarks.orm_delete``): authors, their books.
AUTHORS_TABLE = f"bench_authors_{RUN_TAG}"
BOOKS_TABLE = f"bench_books_{RUN_TAG}"
ROWS = 1000
#: Every pool, ours and the references, has exactly this many connections.
POOL_SIZE = 20
#: Server session settings of every contender (see the module docstring).
SERVER_SETTINGS = {"synchronous_commit": "off"}

#: Contender names, as printed.
PSYCOPG = "psycopg pool"
OURS = "async-db pooled"
OURS_UNPOOLED = "async-db unpooled"
SYNC = "sync_to_async"
ORM = "ORM aget()"
ASYNCPG = "asyncpg pool"
#: The reference every ratio is taken against, and the Django baseline.
REFERENCE = PSYCOPG
DJANGO_BASELINE = SYNC

#: Django aliases.
DJANGO_ALIAS = "default"
POOLED_ALIAS = "pooled"
UNPOOLED_ALIAS = "unpooled"

#: Point lookup, psycopg/Django and asyncpg placeholders.
POINT_SQL = f"SELECT id, name FROM {ITEMS_TABLE} WHERE id = %s"
POINT_SQL_ASYNCPG = f"SELECT id, name FROM {ITEMS_TABLE} WHERE id = $1"


def app_name(contender: str) -> str:
    """The ``application_name`` tagging ``contender``'s sessions."""
    slug = contender.replace(" ", "-").replace("_", "-").strip("()")
    return f"bench-{RUN_TAG}-{slug}"


#: Both sync contenders share Django's one connection (one executor thread).
APP_NAMES = {
    PSYCOPG: app_name(PSYCOPG),
    OURS: app_name(OURS),
    OURS_UNPOOLED: app_name(OURS_UNPOOLED),
    SYNC: app_name("django"),
    ORM: app_name("django"),
    ASYNCPG: app_name(ASYNCPG),
}
ADMIN_APP = app_name("admin")


# ##### Django #####


def databases(dsn: str) -> dict[str, dict[str, Any]]:
    """``DATABASES`` for the benchmark: one entry per way of connecting."""
    options = _libpq_options(dsn)

    def entry(contender: str, **extra: Any) -> dict[str, Any]:
        return settings_dict_from_dsn(
            dsn, application_name=APP_NAMES[contender], options=options, **extra
        )

    pool = {"min_size": POOL_SIZE, "max_size": POOL_SIZE, "timeout": 30}
    return {
        DJANGO_ALIAS: entry(SYNC),
        POOLED_ALIAS: entry(OURS, pool=pool),
        UNPOOLED_ALIAS: entry(OURS_UNPOOLED),
    }


def setup_django(dsn: str) -> None:
    """Configure Django for the benchmark (once per process; idempotent)."""
    import django
    from django.conf import settings

    if settings.configured:
        missing = {DJANGO_ALIAS, POOLED_ALIAS, UNPOOLED_ALIAS} - set(settings.DATABASES)
        if missing or "benchmarks.benchapp" not in settings.INSTALLED_APPS:
            raise RuntimeError(
                "Django was configured before the benchmark could: call "
                "benchmarks._env.setup_django(dsn) before anything else "
                "configures settings."
            )
        return
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["benchmarks.benchapp"],
        DATABASES=databases(dsn),
    )
    django.setup()


# ##### Driver connection parameters #####


def _libpq_options(dsn: str) -> str:
    """libpq ``options``: the DSN's own, then :data:`SERVER_SETTINGS`."""
    own = str(conninfo_to_dict(dsn).get("options") or "")
    ours = " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
    return f"{own} {ours}".strip()


def psycopg_kwargs(dsn: str, contender: str) -> dict[str, Any]:
    """What our backend uses: client-side binding, no prepared statements,
    autocommit."""
    return {
        "autocommit": True,
        "prepare_threshold": None,
        "cursor_factory": psycopg.AsyncClientCursor,
        "application_name": APP_NAMES.get(contender, contender),
        "options": _libpq_options(dsn),
    }


def asyncpg_kwargs(dsn: str) -> dict[str, Any]:
    """asyncpg's connect arguments for a libpq DSN (a Unix socket directory
    as ``host`` works as is)."""
    params = conninfo_to_dict(dsn)
    kwargs: dict[str, Any] = {
        "host": params.get("host"),
        "user": params.get("user"),
        "password": params.get("password") or None,
        "database": params.get("dbname"),
        "server_settings": {"application_name": APP_NAMES[ASYNCPG], **SERVER_SETTINGS},
    }
    if params.get("port"):
        kwargs["port"] = int(str(params["port"]))
    return {key: value for key, value in kwargs.items() if value is not None}


def server_version(conn: psycopg.AsyncConnection[Any]) -> str:
    version = conn.info.server_version
    return f"{version // 10000}.{version % 10000}"


# ##### The shared world #####


class Bench:
    """Setup and teardown around one scenario: the lookup table, the reference
    pools (opened full before anything is timed), an admin connection for
    setup and checks, and the backend observer.

    async-db's own pool is opened lazily by its first task (as in an
    application) and closed on exit with ``close_pools()``; Django's sync
    connection is closed in its executor thread.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._asyncpg_pool: asyncpg.Pool | None = None
        self._admin: psycopg.AsyncConnection[Any] | None = None
        self._observer: Observer | None = None

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        assert self._pool is not None, "use Bench as an async context manager"
        return self._pool

    @property
    def asyncpg_pool(self) -> asyncpg.Pool:
        assert self._asyncpg_pool is not None, "use Bench as an async context manager"
        return self._asyncpg_pool

    @property
    def admin(self) -> psycopg.AsyncConnection[Any]:
        assert self._admin is not None, "use Bench as an async context manager"
        return self._admin

    @property
    def observer(self) -> Observer:
        assert self._observer is not None, "use Bench as an async context manager"
        return self._observer

    async def __aenter__(self) -> Bench:
        setup_django(self.dsn)
        try:
            self._admin = await psycopg.AsyncConnection.connect(
                self.dsn, **psycopg_kwargs(self.dsn, ADMIN_APP)
            )
            await create_items_table(self._admin)
            self._observer = await Observer.connect(self.dsn)
            self._pool = psycopg_pool.AsyncConnectionPool(
                self.dsn,
                min_size=POOL_SIZE,
                max_size=POOL_SIZE,
                kwargs=psycopg_kwargs(self.dsn, PSYCOPG),
                open=False,
                name="bench-psycopg",
            )
            await self._pool.open(wait=True, timeout=15)
            self._asyncpg_pool = await asyncpg.create_pool(
                min_size=POOL_SIZE, max_size=POOL_SIZE, **asyncpg_kwargs(self.dsn)
            )
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close everything opened (also after a partial setup)."""
        from asgiref.sync import sync_to_async
        from django.db import connections

        from async_db import _storage, async_connections

        await _storage.wait_released()
        await async_connections.close_pools()
        await sync_to_async(connections.close_all)()
        if self._asyncpg_pool is not None:
            await self._asyncpg_pool.close()
        if self._pool is not None:
            await self._pool.close()
        if self._observer is not None:
            await self._observer.close()
        if self._admin is not None:
            await drop_items_table(self._admin)
            await self._admin.close()

    async def ours_pool_full(self) -> None:
        """Wait until async-db's pool holds all its connections (after a
        warm-up opened it), so no timed run pays for filling it."""
        from async_db import async_connections

        pool = async_connections.pools.peek(POOLED_ALIAS)
        if pool is not None:
            await pool.wait(timeout=60)

    @property
    def server_version(self) -> str:
        return server_version(self.admin)


async def create_items_table(conn: psycopg.AsyncConnection[Any]) -> None:
    """The point-lookup table: ``ROWS`` rows, fresh statistics."""
    await conn.execute(
        f"CREATE TABLE {ITEMS_TABLE} (id integer PRIMARY KEY, name text NOT NULL)"
    )
    await conn.execute(
        f"INSERT INTO {ITEMS_TABLE} (id, name) "
        f"SELECT i, 'item ' || i FROM generate_series(1, %s) AS i",
        [ROWS],
    )
    await conn.execute(f"ANALYZE {ITEMS_TABLE}")


async def drop_items_table(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {ITEMS_TABLE}")


# ##### Counting backends #####


@dataclass
class Peak:
    """The most backends one contender had on the server during a run:
    ``backends`` in total (idle pool members included), ``busy`` not idle."""

    backends: int = 0
    busy: int = 0
    polls: int = 0


class Observer:
    """Polls ``pg_stat_activity`` from its own connection while a run goes
    on, counting the sessions tagged with one contender's application name."""

    #: Seconds between polls: often enough to see a run of a few ms, rare
    #: enough to cost the contenders under 1% of a core.
    INTERVAL = 0.005
    SQL = (
        "SELECT count(*), count(*) FILTER (WHERE state <> 'idle') "
        "FROM pg_stat_activity WHERE application_name = %s"
    )

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> Observer:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name=app_name("observer")
        )
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    @asynccontextmanager
    async def watch(self, application_name: str) -> AsyncIterator[Peak]:
        """Poll until the block exits; the yielded :class:`Peak` is filled in
        as polls come (final once the block has exited)."""
        peak = Peak()
        stop = asyncio.Event()
        await self._poll(application_name, peak)
        poller = asyncio.create_task(self._run(application_name, peak, stop))
        try:
            yield peak
        finally:
            # Stopped between polls, never cancelled mid-query: the observer's
            # connection stays usable.
            stop.set()
            await poller

    async def _run(
        self, application_name: str, peak: Peak, stop: asyncio.Event
    ) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL)
            if stop.is_set():
                return
            await self._poll(application_name, peak)

    async def _poll(self, application_name: str, peak: Peak) -> None:
        cur = await self._conn.execute(self.SQL, [application_name])
        row = await cur.fetchone()
        assert row is not None
        backends, busy = row
        peak.backends = max(peak.backends, backends)
        peak.busy = max(peak.busy, busy)
        peak.polls += 1

    async def count(self, application_name: str) -> int:
        """The backends tagged ``application_name`` right now."""
        peak = Peak()
        await self._poll(application_name, peak)
        return peak.backends

    async def free_connections(self) -> int:
        """The server's ``max_connections`` minus the client backends open."""
        cur = await self._conn.execute(
            "SELECT current_setting('max_connections')::int - "
            "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
            "'client backend')"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])
