"""Test helpers: isolate async writes per test, on Django's test database.

The helpers only ever run on a **test database**, never on the database your
``DATABASES`` names for development or production:

- :func:`setup_test_databases` creates the test databases the way Django's test
  runner does (``test_<NAME>``, or ``TEST["NAME"]``; Django's own
  ``setup_databases``, run with the sync connection) and points
  ``async_connections`` at them (:func:`use_test_databases`);
  :func:`teardown_test_databases` drops them. The pytest plugin
  (``async_db.pytest_plugin``) does this once per session, or lets
  pytest-django do it when pytest-django is active.
- :func:`isolated` and :func:`flushed` refuse, with ``ProgrammingError`` naming
  the alias and the database, to run on a database that is not a test
  database (:func:`is_test_database`).

Two isolation modes, like Django's ``TestCase`` and ``TransactionTestCase``:

- :func:`isolated` (rollback mode): the test runs inside an outer
  ``async_atomic`` per alias that is rolled back at the end. Fast; but it only
  covers the test's own task. A task the test spawns gets a connection of its
  own, outside that transaction (DESIGN rule 3): async-db refuses it with
  ``TransactionManagementError`` on its first query, so such a test fails
  loudly instead of writing data the rollback can't undo. Share the test's
  connection with them (``isolated(spawned_tasks="share")``, test-only), use
  the flush mode, or await the work in the test's task. ``on_commit`` callbacks never
  run in this mode (nothing commits): use :func:`capture_on_commit_callbacks`.
- :func:`flushed` (flush mode): the test runs normally, committing for real;
  afterwards the given tables (default: every installed model's table) are
  truncated. Spawned tasks, ``new_connections()``, ``on_commit`` all behave
  as in production.

Django's test cases, for ``async def`` tests (:class:`TestCase`,
:class:`TransactionTestCase`): in ``TestCase`` the test task's async connection
of each alias is built on the server session of Django's sync connection,
inside the test's transaction (:func:`shared_session`), so sync fixtures and
async code see each other's rows and Django's rollback undoes both; the pytest
plugin does the same in pytest-django's per-test transaction.

With pytest, mark a test ``@pytest.mark.async_db`` (rollback mode) or
``@pytest.mark.async_db(transaction=True)`` (flush mode) after enabling the
plugin (``-p async_db.pytest_plugin``, or list it in ``pytest_plugins``); with
pytest-django, ``@pytest.mark.django_db`` covers async-db too.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from django import test as django_test
from django.db import DEFAULT_DB_ALIAS, ProgrammingError

from async_db.transaction import Atomic

if TYPE_CHECKING:
    from async_db._handler import AsyncConnectionHandler

__all__ = [
    "TestCase",
    "TransactionTestCase",
    "capture_on_commit_callbacks",
    "communicators_in_test_context",
    "flushed",
    "is_test_database",
    "isolated",
    "setup_test_databases",
    "shared_session",
    "teardown_test_databases",
    "use_test_databases",
]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: Prefix Django gives a test database's name (``BaseDatabaseCreation``).
TEST_DATABASE_PREFIX = "test_"

#: (alias, NAME) of the test databases the helpers switched to in this run.
_test_databases: set[tuple[str, str]] = set()


def _handler(handler: AsyncConnectionHandler | None) -> AsyncConnectionHandler:
    if handler is not None:
        return handler
    from async_db import async_connections

    return async_connections


def _aliases(databases: Sequence[str] | str | None) -> list[str]:
    if databases is None:
        return [DEFAULT_DB_ALIAS]
    if databases == "__all__":
        from async_db import async_connections

        return list(async_connections)
    if isinstance(databases, str):
        return [databases]
    return list(databases)


# -- Test databases ----------------------------------------------------------


def is_test_database(alias: str, handler: AsyncConnectionHandler | None = None) -> bool:
    """Whether ``alias`` of ``handler`` (default ``async_connections``) names a
    test database, by Django's rule: its ``NAME`` is its ``TEST["NAME"]``, or
    it is the test database (``TEST["NAME"]`` or ``"test_" + NAME``) that
    :func:`use_test_databases` switched it to in this run. No I/O."""
    settings_dict = _handler(handler).settings[alias]
    name = settings_dict["NAME"]
    test_name = (settings_dict.get("TEST") or {}).get("NAME")
    if name and name == test_name:
        return True
    return (alias, name) in _test_databases


def _check_test_database(alias: str, action: str) -> None:
    """Raise ``ProgrammingError`` unless ``alias`` is a test database."""
    if is_test_database(alias):
        return
    from async_db import async_connections

    name = async_connections.settings[alias]["NAME"]
    raise ProgrammingError(
        f"Refusing to {action} database '{name}' (alias '{alias}'): it is not a "
        f"test database. async_db.test's helpers only run on Django's test "
        f"database: its NAME must be its TEST['NAME'], or the test database "
        f"('test_{name}' or TEST['NAME']) created by setup_test_databases(), the "
        f"async_db pytest plugin or pytest-django."
    )


def _test_names(settings_dict: dict[str, Any], django: Any) -> set[str]:
    """The names Django gives the test database of an alias configured with
    ``settings_dict`` (``django``: its sync connection, whose ``TEST`` may
    have been changed since, as pytest-django's xdist suffix does)."""
    names = {f"{TEST_DATABASE_PREFIX}{settings_dict['NAME']}"}
    for entry in (settings_dict, django.settings_dict):
        test_name = (entry.get("TEST") or {}).get("NAME")
        if test_name:
            names.add(test_name)
    return names


def use_test_databases(
    aliases: Iterable[str] | None = None,
    *,
    handler: AsyncConnectionHandler | None = None,
) -> None:
    """Point ``handler`` (default ``async_connections``) at the databases
    Django's sync connections use now.

    Call it after Django's ``setup_databases()`` (or pytest-django's
    ``django_db_setup``) has switched ``settings.DATABASES[alias]["NAME"]`` to
    the test database, and again after ``teardown_databases()`` switched it
    back: for each alias (default: all of the handler's) whose ``NAME``
    differs, the handler's settings are updated in place, so wrappers created
    afterwards (and existing ones) connect to the new database. A new name
    that is the alias's test name (``TEST["NAME"]`` or ``"test_" + NAME``, or
    another alias's, for a test mirror) is recorded as a test database (see
    :func:`is_test_database`).

    Sync, no I/O. A pool open on a switched alias would keep serving
    connections to the old database: close it first
    (``await async_connections.close_pools()`` in the loop that opened it), or
    this raises ``ProgrammingError``.
    """
    from django.db import connections

    handler = _handler(handler)
    known = set(connections)
    selected = [a for a in (handler if aliases is None else aliases) if a in known]
    moves: dict[str, str] = {}
    test_names: set[str] = set()
    for alias in selected:
        entry = handler.settings[alias]
        test_names |= _test_names(entry, connections[alias])
        if connections[alias].settings_dict["NAME"] != entry["NAME"]:
            moves[alias] = connections[alias].settings_dict["NAME"]
    for alias in moves:
        if handler.pools.peek(alias) is not None:
            raise ProgrammingError(
                f"Cannot point database '{alias}' at '{moves[alias]}': its "
                f"connection pool is open on '{handler.settings[alias]['NAME']}'. "
                f"Call 'await async_connections.close_pools()' in the event loop "
                f"that opened it first."
            )
    for alias, name in moves.items():
        entry = handler.settings[alias]
        entry["NAME"] = name
        entry["TEST"] = {**entry["TEST"], **connections[alias].settings_dict["TEST"]}
        if name in test_names:
            _test_databases.add((alias, name))


def _running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def setup_test_databases(
    aliases: Iterable[str] | None = None,
    *,
    verbosity: int = 0,
    keepdb: bool = False,
    handler: AsyncConnectionHandler | None = None,
) -> list[tuple[Any, str, bool]]:
    """Create the test databases of ``aliases`` (default: all) the way Django's
    test runner does, and point ``handler`` at them.

    Runs Django's ``django.test.utils.setup_databases()`` (test name
    ``TEST["NAME"]`` or ``"test_" + NAME``; an old one left by a crashed run is
    dropped and recreated unless ``keepdb``; migrations run), then
    :func:`use_test_databases`. An alias whose ``NAME`` already is its
    ``TEST["NAME"]`` is used as it is: neither created nor dropped. Returns
    the value to pass to :func:`teardown_test_databases`.

    Sync code, with Django's sync connections: call it outside the event loop
    (a sync fixture, a ``conftest`` hook, a test runner's setup).
    """
    from django.test.utils import setup_databases

    if _running_loop():
        raise ProgrammingError(
            "setup_test_databases() runs Django's sync test database setup: call "
            "it outside the event loop (from a sync fixture or hook)."
        )
    handler = _handler(handler)
    handler.settings  # noqa: B018 - read the configured names before Django changes them
    wanted = list(handler) if aliases is None else list(aliases)
    to_create = {alias for alias in wanted if not is_test_database(alias, handler)}
    if not to_create:
        return []
    old_config: list[tuple[Any, str, bool]] = setup_databases(
        verbosity,
        interactive=False,
        keepdb=keepdb,
        # A mapping, as Django's DiscoverRunner.get_databases() gives it.
        aliases=dict.fromkeys(sorted(to_create), False),
        serialized_aliases=set(),
    )
    # Every alias: Django also renamed the test mirrors (TEST["MIRROR"]).
    use_test_databases(handler=handler)
    return old_config


def teardown_test_databases(
    old_config: list[tuple[Any, str, bool]],
    *,
    verbosity: int = 0,
    keepdb: bool = False,
    handler: AsyncConnectionHandler | None = None,
) -> None:
    """Drop the databases :func:`setup_test_databases` created (Django's
    ``teardown_databases()``) and point ``handler`` back at the configured
    ones. Every pool on them must be closed first: PostgreSQL refuses to drop
    a database that has connections (the pytest plugin closes the pools of
    each test's event loop when the test ends). Sync, outside the loop."""
    from django.test.utils import teardown_databases

    if not old_config:
        return
    teardown_databases(old_config, verbosity=verbosity, keepdb=keepdb)
    use_test_databases(handler=handler)


# -- Isolation modes -----------------------------------------------------------


#: The values of ``isolated(spawned_tasks=...)``.
SPAWNED_TASKS = ("forbid", "share")


class _Isolated:
    """Rollback mode: see :func:`isolated`."""

    def __init__(
        self,
        databases: Sequence[str] | str | None,
        spawned_tasks: str = "forbid",
        share_timeout: float = 10.0,
    ) -> None:
        if spawned_tasks not in SPAWNED_TASKS:
            raise ValueError(
                f"isolated(spawned_tasks={spawned_tasks!r}): use one of "
                f"{', '.join(map(repr, SPAWNED_TASKS))}."
            )
        self.aliases = _aliases(databases)
        self.spawned_tasks = spawned_tasks
        self.share_timeout = share_timeout
        self._stacks: list[AsyncExitStack] = []

    async def __aenter__(self) -> None:
        from async_db import async_connections
        from async_db._share import SharedConnection

        for alias in self.aliases:
            _check_test_database(alias, "open rollback mode on")
        stack = AsyncExitStack()
        for alias in self.aliases:
            block = Atomic(alias, savepoint=True, durable=False)
            # As Django's TestCase: durable blocks inside the test still work.
            block._from_testcase = True
            await stack.enter_async_context(block)
            stack.push_async_callback(_roll_back_later, alias)
            if self.spawned_tasks == "share":
                share = SharedConnection(
                    async_connections[alias],
                    (async_connections, alias),
                    self.share_timeout,
                )
                share.install()
                stack.callback(share.uninstall)
        self._stacks.append(stack)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stacks.pop().__aexit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        async def inner(*args: Any, **kwargs: Any) -> Any:
            async with _Isolated(self.aliases, self.spawned_tasks, self.share_timeout):
                return await func(*args, **kwargs)

        return inner  # type: ignore[return-value]


async def _roll_back_later(alias: str) -> None:
    """Runs just before the outer block exits: mark it for rollback."""
    from async_db import async_connections

    conn = async_connections[alias]
    if conn.in_atomic_block:
        conn.set_rollback(True)


def isolated(
    databases: Sequence[str] | str | None = None,
    *,
    spawned_tasks: str = "forbid",
    share_timeout: float = 10.0,
) -> _Isolated:
    """Run a test (``async with isolated():`` or ``@isolated()``) inside a
    transaction per alias (default ``"default"``; ``"__all__"`` for every
    alias) that is rolled back at the end.

    ``spawned_tasks``: what a task the test spawns gets on those aliases.
    ``"forbid"`` (the default, production's rule): a
    ``TransactionManagementError``, since its own connection would escape the
    test's transaction. ``"share"`` (test-only): the test's connection, one
    query or ``async_atomic`` block at a time (tasks spawned inside a holder's
    block may use it); a task waiting longer than ``share_timeout`` seconds
    gets an error naming the holder. Everything is rolled back at the end.

    Raises ``ProgrammingError`` naming the alias and the database, before
    opening anything, if one of them is not a test database
    (:func:`is_test_database`)."""
    return _Isolated(databases, spawned_tasks, share_timeout)


@asynccontextmanager
async def flushed(
    databases: Sequence[str] | str | None = None,
    tables: Iterable[str] | None = None,
) -> AsyncIterator[None]:
    """Flush mode: run the block normally, then truncate ``tables`` (default:
    the tables of every installed model) on each alias.

    Raises ``ProgrammingError`` naming the alias and the database, before the
    block runs (so it commits nothing there) and again before truncating, if
    one of them is not a test database (:func:`is_test_database`)."""
    aliases = _aliases(databases)
    for alias in aliases:
        _check_test_database(alias, "flush")
    try:
        yield
    finally:
        names = list(tables) if tables is not None else _installed_tables()
        if names:
            from async_db import async_connections

            for alias in aliases:
                _check_test_database(alias, "flush")
                async with async_connections[alias].cursor() as cursor:
                    quoted = ", ".join(f'"{name}"' for name in names)
                    await cursor.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")


def _installed_tables() -> list[str]:
    from django.apps import apps

    return sorted(
        {
            model._meta.db_table
            for model in apps.get_models()
            if model._meta.managed and not model._meta.proxy
        }
    )


@asynccontextmanager
async def capture_on_commit_callbacks(
    *, using: str = DEFAULT_DB_ALIAS, execute: bool = False
) -> AsyncIterator[list[Callable[[], Any]]]:
    """Django's ``captureOnCommitCallbacks`` for async code: yields the list of
    callbacks registered with ``on_commit`` inside the block (also those
    registered by executed callbacks); with ``execute=True`` they run at exit,
    in order, as after a commit.

    Like Django's, it only sees callbacks registered inside a transaction: in
    autocommit mode ``on_commit`` runs a callback at once and keeps nothing.
    Use it inside :func:`isolated` (or a ``@pytest.mark.async_db`` test), or
    around code inside an ``async_atomic`` block that is still open at exit."""
    from async_db import async_connections
    from async_db.backends.base.base import _run_commit_hook

    callbacks: list[Callable[[], Any]] = []
    conn = async_connections[using]
    start_count = len(conn.run_on_commit)
    try:
        yield callbacks
    finally:
        while True:
            callback_count = len(conn.run_on_commit)
            for _, callback, robust in conn.run_on_commit[start_count:]:
                callbacks.append(callback)
                if execute:
                    await _run_commit_hook(callback, robust, "during transaction ")
            if callback_count == len(conn.run_on_commit):
                break
            start_count = callback_count


# -- One server session for Django's sync connection and async-db -------------
#
# Django's TestCase (and pytest-django's per-test transaction) holds the test's
# transaction on the *sync* connection of each alias. async-db's rollback mode
# holds one on the task's *async* connection: two sessions, and neither sees
# the other's uncommitted rows. So during a test the async wrapper of each
# alias is built on the libpq connection of Django's sync connection (psycopg
# wraps one ``PGconn`` in a ``Connection`` and an ``AsyncConnection`` alike):
# one server session, one transaction. The async wrapper starts "inside" the
# test's transaction (autocommit off, as after Django's ``atomic``), so its
# ``async_atomic`` blocks are savepoints, it never commits, and it never
# closes the session: Django's connection owns it.


class _SessionLock:
    """The shared ``AsyncConnection``'s ``lock``: an ``asyncio.Lock`` that
    also holds the sync ``Connection``'s ``threading.Lock`` while a query
    runs, so the two sides of one session never talk to the server at once
    (a sync ORM call in ``sync_to_async`` gathered with a native one waits,
    it doesn't corrupt the protocol). The sync lock is polled, never waited
    for in a thread: a cancelled wait must not leave it taken."""

    def __init__(self, sync_lock: Any) -> None:
        self._lock = asyncio.Lock()
        self._sync_lock = sync_lock

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            while not self._sync_lock.acquire(blocking=False):  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._sync_lock.release()
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


@functools.cache
def _shared_connection_class() -> type[Any]:
    # Built on first use: psycopg is the PostgreSQL backend's, not this
    # module's, dependency.
    import psycopg

    class SharedSessionConnection(psycopg.AsyncConnection[Any]):
        """An ``AsyncConnection`` on the libpq connection of a sync psycopg
        ``Connection`` (Django's, in a test). It never closes the session
        (``close()`` only detaches) and keeps the sync side's notice
        handlers."""

        def __init__(self, sync: psycopg.Connection[Any]) -> None:
            pgconn = sync.pgconn
            handlers = (pgconn.notice_handler, pgconn.notify_handler)
            super().__init__(pgconn)
            pgconn.notice_handler, pgconn.notify_handler = handlers
            self.lock = _SessionLock(sync.lock)  # type: ignore[assignment]

        async def close(self) -> None:
            """The session is Django's connection's: nothing to close here."""

        def __del__(self, *args: Any) -> None:
            # Not "deleted while still open": the sync connection owns it.
            pass

    return SharedSessionConnection


def _test_transaction_of(django_connection: Any) -> bool:
    """Whether Django's sync connection is inside a test case's atomic block
    (Django's TestCase, pytest-django's per-test transaction)."""
    blocks = getattr(django_connection, "atomic_blocks", [])
    return (
        django_connection.connection is not None
        and django_connection.in_atomic_block
        and any(getattr(block, "_from_testcase", False) for block in blocks)
    )


def _attach_session(alias: str, django_connection: Any) -> Callable[[], None]:
    """Build the current task's async wrapper of ``alias`` on the session of
    ``django_connection`` (Django's sync connection, inside its test's
    transaction); return the function that detaches it (no I/O either way).

    Raises ``ProgrammingError`` naming the alias when Django's connection is
    not in a test case's transaction, or when the task's wrapper is already
    connected."""
    from async_db import async_connections

    if not _test_transaction_of(django_connection):
        raise ProgrammingError(
            f"Cannot share Django's connection of database '{alias}' with "
            f"async-db: it is not inside a test case's transaction (Django's "
            f"TestCase, or pytest-django's django_db without transaction=True)."
        )
    wrapper = async_connections[alias]
    wrapper.validate_task_sharing()
    if wrapper.connection is not None:
        raise ProgrammingError(
            f"Cannot share Django's connection of database '{alias}': this "
            f"task's async-db connection is already open. Share the session "
            f"before the test's first query."
        )
    # The sync connection is Django's test connection: the database the test
    # case runs on is a test database (also when async_connections read the
    # settings after Django switched them to it). Only that name, never
    # another one the handler may still point at.
    name = async_connections.settings[alias]["NAME"]
    if name == django_connection.settings_dict["NAME"]:
        _test_databases.add((alias, name))
    params = wrapper.get_connection_params()
    shared = _shared_connection_class()(django_connection.connection)
    shared.cursor_factory = params["cursor_factory"]
    # What psycopg's connect() does with its ``context`` argument.
    from psycopg.adapt import AdaptersMap

    shared._adapters = AdaptersMap(params["context"].adapters)
    # Both sides would name prepared statements _pg3_0, _pg3_1, ... on one
    # session: the async side never prepares.
    shared.prepare_threshold = None
    wrapper.connection = shared
    # In a transaction already, as after Django's atomic() turned autocommit
    # off: async_atomic blocks are savepoints, commit/rollback are refused.
    wrapper.autocommit = False
    wrapper.health_check_done = True
    if wrapper.handler is not None:
        # The spawned-task rule sees the transaction.
        wrapper.handler.note_transaction(wrapper, True)
    # async-db warns when a sync query runs beside an async transaction, on
    # another session: here it is the same session and transaction.
    from async_db._interop import _guard

    guarded = _guard in django_connection.execute_wrappers
    if guarded:
        django_connection.execute_wrappers.remove(_guard)

    def detach() -> None:
        if guarded and _guard not in django_connection.execute_wrappers:
            django_connection.execute_wrappers.append(_guard)
        wrapper.connection = None
        wrapper.autocommit = bool(wrapper.settings_dict["AUTOCOMMIT"])
        wrapper.in_atomic_block = False
        wrapper.atomic_blocks = []
        wrapper.savepoint_ids = []
        wrapper.needs_rollback = False
        wrapper.closed_in_transaction = False
        wrapper.run_on_commit = []
        if hasattr(wrapper, "_held_cursors"):
            wrapper._held_cursors = None
        if wrapper.handler is not None:
            wrapper.handler.note_transaction(wrapper, False)

    return detach


def _install_in_sync_thread(
    django_connections: dict[str, Any],
) -> dict[str, Any] | None:
    """Run in the thread ``sync_to_async`` uses: make ``connections[alias]``
    there the test's connection (Django's ``LiveServerTestCase`` shares its
    connections with the server thread the same way). Return what to put back,
    or None when this already is the test's thread."""
    from django.db import connections

    if all(connections[alias] is conn for alias, conn in django_connections.items()):
        return None
    previous = {alias: connections[alias] for alias in django_connections}
    for alias, conn in django_connections.items():
        conn.inc_thread_sharing()
        connections[alias] = conn
    return previous


def _restore_sync_thread(
    django_connections: dict[str, Any], previous: dict[str, Any]
) -> None:
    from django.db import connections

    for alias, conn in django_connections.items():
        connections[alias] = previous[alias]
        conn.dec_thread_sharing()


@asynccontextmanager
async def shared_session(
    django_connections: dict[str, Any],
    *,
    spawned_tasks: str = "forbid",
) -> AsyncIterator[None]:
    """Rollback mode on Django's test transaction: run the block with the
    current task's async connection of each alias of ``django_connections``
    (alias -> Django's sync connection, inside its test case's transaction)
    on that connection's server session, inside :func:`isolated` (a savepoint
    rolled back at the end, ``spawned_tasks`` as there).

    Sync code reached through ``sync_to_async`` (thread-sensitive, Django's
    own ``aget()`` and friends included) runs on the same connection, so sync
    fixtures and async code see each other's rows and everything is rolled
    back with Django's transaction. Used by :class:`TestCase` and by the
    pytest plugin with pytest-django; the sync side must not run a query
    while an async one is in flight (a lock makes one wait for the other).
    """
    from asgiref.sync import sync_to_async

    aliases = list(django_connections)
    async with AsyncExitStack() as stack:
        for alias, django_connection in django_connections.items():
            stack.callback(_attach_session(alias, django_connection))
        previous = await sync_to_async(_install_in_sync_thread)(django_connections)
        if previous is not None:
            stack.push_async_callback(
                sync_to_async(_restore_sync_thread), django_connections, previous
            )
        if spawned_tasks == "forbid":
            await stack.enter_async_context(isolated(aliases))
        else:
            await stack.enter_async_context(
                isolated(aliases, spawned_tasks=spawned_tasks)
            )
        yield


async def _close_test_pools() -> None:
    """Close the pools of the running loop (a test's, which is about to end),
    once the releases of finished tasks are done."""
    from async_db import async_connections
    from async_db._storage import wait_released

    await wait_released()
    await async_connections.close_pools()


class _CommunicatorContext:
    """While a test runs: Channels' (asgiref's) ``ApplicationCommunicator``
    starts the application in a copy of the test's context, not an empty one.

    The communicator clears the context so that nothing of the test leaks
    into the application, which means the consumer's task sees nothing of the
    test's transaction: its native ORM writes went to a connection of its own
    and were committed. Started in a copy, it is a task the test spawned, and
    the spawned-task rule applies: refused (``"forbid"``) or on the test's
    connection (``"share"``)."""

    depth = 0
    original: Any = None
    close_old: Any = None

    def __enter__(self) -> None:
        try:
            from asgiref.testing import ApplicationCommunicator
        except ImportError:  # pragma: no cover - asgiref comes with Django
            return
        cls = type(self)
        if cls.depth == 0:
            cls.original = ApplicationCommunicator.future
            ApplicationCommunicator.future = property(_communicator_future)  # type: ignore[method-assign,assignment]
            cls.close_old = _patch_channels_close_old_connections(_no_op)
        cls.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        cls = type(self)
        if cls.original is None:
            return
        cls.depth -= 1
        if cls.depth == 0:
            from asgiref.testing import ApplicationCommunicator

            ApplicationCommunicator.future = cls.original  # type: ignore[method-assign]
            cls.original = None
            if cls.close_old is not None:
                _patch_channels_close_old_connections(cls.close_old)


def _no_op() -> None:
    pass


def _patch_channels_close_old_connections(replacement: Any) -> Any:
    """Channels' consumers call Django's ``close_old_connections()`` before
    each message (``channels.db.aclose_old_connections``), in the test's
    thread: it would close the connection holding the test's transaction
    (autocommit is off there). Channels' own communicator patches it only
    while a message is queued, not while the consumer handles it: during a
    test it does nothing at all. Return what it replaced (None: no Channels)."""
    try:
        import channels.db  # type: ignore[import-untyped]
    except ImportError:
        return None
    previous = channels.db.close_old_connections
    channels.db.close_old_connections = replacement
    return previous


def _communicator_future(self: Any) -> Any:
    if self._future is None:
        self._future = asyncio.create_task(
            self.application(self.scope, self.input_queue.get, self.output_queue.put)
        )
    return self._future


def communicators_in_test_context() -> _CommunicatorContext:
    """A context manager: inside it, a Channels ``WebsocketCommunicator`` (any
    asgiref ``ApplicationCommunicator``) starts its application as a task the
    test spawned, in a copy of the test's context, so the test's isolation
    covers it. :class:`TestCase`, :class:`TransactionTestCase` and the pytest
    plugin enter it around every async test."""
    return _CommunicatorContext()


# -- Django's test cases ------------------------------------------------------


class _AsyncDbTestMixin:
    """What :class:`TestCase` and :class:`TransactionTestCase` add to
    Django's: each ``async def test_...`` method runs with async-db on the
    test's databases, in the test's own event loop and task."""

    #: What a task the test spawns gets on the test's aliases (TestCase):
    #: ``"forbid"`` (``TransactionManagementError``) or ``"share"`` (the
    #: test's connection, one query or atomic block at a time).
    spawned_tasks = "forbid"
    #: Rollback mode on Django's test transaction (TestCase) or not.
    _async_db_rollback = False

    _testMethodName: str
    databases: Any

    @classmethod
    def setUpClass(cls) -> None:
        # Point async-db at the test databases Django's runner created.
        use_test_databases()
        super().setUpClass()  # type: ignore[misc]

    def _async_db_aliases(self) -> list[str]:
        from async_db import async_connections

        names = self._databases_names(include_mirrors=False)  # type: ignore[attr-defined]
        return [alias for alias in names if alias in async_connections.settings]

    def _setup_and_call(self, result: Any, debug: bool = False) -> None:
        import inspect

        method = getattr(self, self._testMethodName)
        if inspect.iscoroutinefunction(method):
            setattr(self, self._testMethodName, self._async_db_wrap(method))
        super()._setup_and_call(result, debug)  # type: ignore[misc]

    def _async_db_wrap(self, method: Callable[..., Awaitable[Any]]) -> Any:
        from django.db import connections

        @functools.wraps(method)
        async def run_test(*args: Any, **kwargs: Any) -> Any:
            async with AsyncExitStack() as stack:
                stack.push_async_callback(_close_test_pools)
                stack.enter_context(communicators_in_test_context())
                if self._async_db_rollback and all(
                    _test_transaction_of(conn) for conn in sessions.values()
                ):
                    # Django's connections of the test's thread (this runs in
                    # async_to_sync's loop thread: captured before, below).
                    # Without transactions (a database that has none), Django's
                    # TestCase behaves as TransactionTestCase: so does this.
                    await stack.enter_async_context(
                        shared_session(sessions, spawned_tasks=self.spawned_tasks)
                    )
                return await method(*args, **kwargs)

        # Read in the test's thread, where Django holds its transaction.
        sessions = {alias: connections[alias] for alias in self._async_db_aliases()}
        self._async_db_sessions = sessions
        return run_test

    def assertNumQueries(
        self,
        num: int,
        func: Callable[..., Any] | None = None,
        *args: Any,
        using: str = DEFAULT_DB_ALIAS,
        **kwargs: Any,
    ) -> Any:
        """Django's ``assertNumQueries``, counting async-db's queries too: in
        an async test, those of the task's async-db connection of ``using``
        (the native ORM's included) and of Django's connection; in a sync test,
        Django's. ``with`` and ``async with`` both work; ``func`` may be a
        coroutine function (then await the call)."""
        import inspect

        if not _in_task():
            return super().assertNumQueries(num, func, *args, using=using, **kwargs)  # type: ignore[misc]
        sync_connection = getattr(self, "_async_db_sessions", {}).get(using)
        context = _AssertNumQueries(self, num, using, sync_connection)
        if func is None:
            return context
        if inspect.iscoroutinefunction(func):
            return context.arun(func, *args, **kwargs)
        with context:
            func(*args, **kwargs)
        return None

    @classmethod
    def captureOnCommitCallbacks(
        cls, *, using: str = DEFAULT_DB_ALIAS, execute: bool = False
    ) -> Any:
        """Django's ``captureOnCommitCallbacks``; in an async test use
        ``async with``: it captures the callbacks registered with async-db's
        ``on_commit`` (:func:`capture_on_commit_callbacks`; async callbacks are
        awaited with ``execute=True``). ``with`` is Django's, for sync code."""
        return _CaptureOnCommit(
            super().captureOnCommitCallbacks(using=using, execute=execute),  # type: ignore[misc]
            using,
            execute,
        )


def _in_task() -> bool:
    try:
        return asyncio.current_task() is not None
    except RuntimeError:
        return False


class _AssertNumQueries:
    """``assertNumQueries`` for an async test: counts what the current task's
    async-db connection of the alias and Django's connection log while the
    block runs (no I/O: sync and async ``with`` both work)."""

    def __init__(
        self, test_case: Any, num: int, using: str, sync_connection: Any
    ) -> None:
        self.test_case = test_case
        self.num = num
        self.using = using
        self.sync_connection = sync_connection
        self.captured_queries: list[dict[str, str]] = []

    def __enter__(self) -> _AssertNumQueries:
        from async_db import async_connections

        self._logs = [async_connections[self.using]]
        if self.sync_connection is not None:
            self._logs.append(self.sync_connection)
        self._saved = [(conn, conn.force_debug_cursor) for conn in self._logs]
        for conn in self._logs:
            conn.force_debug_cursor = True
        self._starts = [len(conn.queries_log) for conn in self._logs]
        return self

    def __exit__(self, exc_type: Any, *exc_info: object) -> None:
        for conn, flag in self._saved:
            conn.force_debug_cursor = flag
        for conn, start in zip(self._logs, self._starts, strict=True):
            self.captured_queries.extend(list(conn.queries_log)[start:])
        if exc_type is not None:
            return
        executed = len(self.captured_queries)
        queries = "\n".join(
            f"{i}. {query['sql']}"
            for i, query in enumerate(self.captured_queries, start=1)
        )
        self.test_case.assertEqual(
            executed,
            self.num,
            f"{executed} queries executed, {self.num} expected\n"
            f"Captured queries were:\n{queries}",
        )

    async def __aenter__(self) -> _AssertNumQueries:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, *exc_info: object) -> None:
        self.__exit__(exc_type, *exc_info)

    async def arun(
        self, func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> None:
        async with self:
            await func(*args, **kwargs)


class _CaptureOnCommit:
    """``with``: Django's captureOnCommitCallbacks; ``async with``:
    async-db's :func:`capture_on_commit_callbacks`."""

    def __init__(self, django_context: Any, using: str, execute: bool) -> None:
        self._django = django_context
        self._using = using
        self._execute = execute
        self._async: Any = None

    def __enter__(self) -> list[Callable[[], Any]]:
        if _in_task():
            raise ProgrammingError(
                "captureOnCommitCallbacks() in an async test: use 'async with "
                "self.captureOnCommitCallbacks(...)', which captures async-db's "
                "on_commit callbacks."
            )
        return self._django.__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc_info: Any) -> Any:
        return self._django.__exit__(*exc_info)

    async def __aenter__(self) -> list[Callable[[], Any]]:
        self._async = capture_on_commit_callbacks(
            using=self._using, execute=self._execute
        )
        return await self._async.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._async.__aexit__(*exc_info)


class TransactionTestCase(_AsyncDbTestMixin, django_test.TransactionTestCase):
    """Django's ``TransactionTestCase`` for ``async def test_...`` methods:
    async-db runs normally, committing for real, on the test databases, and
    Django's flush after each test empties the tables (async-db's rows
    included). Each test's pools are closed when it ends (its event loop
    ends with it). Sync tests run exactly as in Django's."""


class TestCase(_AsyncDbTestMixin, django_test.TestCase):
    """Django's ``TestCase`` for ``async def test_...`` methods.

    In an async test, the task's async-db connection of each alias of
    ``databases`` is built on the server session of Django's connection, inside
    the test's transaction (see :func:`shared_session`): ``setUpTestData``'s
    rows are visible to native ORM calls, the async test's rows to sync code
    (``sync_to_async``, Django's own ``aget()``), ``async_atomic`` blocks are
    savepoints, and Django's rollback at the end of the test undoes it all.
    ``spawned_tasks = "share"`` lets the tasks the test spawns use that
    connection too (default ``"forbid"``: they get
    ``TransactionManagementError``). ``assertNumQueries`` counts async-db's
    queries; ``async with self.captureOnCommitCallbacks()`` captures its
    ``on_commit`` callbacks. Sync tests run exactly as in Django's."""

    _async_db_rollback = True
