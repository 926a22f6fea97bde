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
  loudly instead of writing data the rollback can't undo. Use the flush mode
  for it, or await the work in the test's task. ``on_commit`` callbacks never
  run in this mode (nothing commits): use :func:`capture_on_commit_callbacks`.
- :func:`flushed` (flush mode): the test runs normally, committing for real;
  afterwards the given tables (default: every installed model's table) are
  truncated. Spawned tasks, ``new_connections()``, ``on_commit`` all behave
  as in production.

With pytest, mark a test ``@pytest.mark.async_db`` (rollback mode) or
``@pytest.mark.async_db(transaction=True)`` (flush mode) after enabling the
plugin (``-p async_db.pytest_plugin``, or list it in ``pytest_plugins``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, ProgrammingError

from async_db.transaction import Atomic

if TYPE_CHECKING:
    from async_db._handler import AsyncConnectionHandler

__all__ = [
    "capture_on_commit_callbacks",
    "flushed",
    "is_test_database",
    "isolated",
    "setup_test_databases",
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
