"""pytest plugin: async tests on Django's test database, isolated per test.

Enable with ``-p async_db.pytest_plugin`` (or ``pytest_plugins``). Then::

    @pytest.mark.async_db                      # rollback mode, alias "default"
    @pytest.mark.async_db(databases="__all__")  # every alias
    @pytest.mark.async_db(transaction=True)     # flush mode (commits for real)
    @pytest.mark.async_db(spawned_tasks="share")  # spawned tasks share the
                                                  # test's connection

The test coroutine itself is wrapped, so the transaction is opened in the
test's own task: the only task whose connection it can cover (see
``async_db.test``). Works with pytest-asyncio, its loop per test or per
session. When the test ends, the wrapper closes the pools of the test's event
loop, so no connection is left on the test database (PostgreSQL refuses to
drop a database that has one).

With pytest-django, ``@pytest.mark.django_db`` (and the ``db`` fixture) covers
async-db too: in pytest-django's per-test transaction, the test task's
async-db connection of each of the test's ``databases`` shares the server
session of Django's connection (``async_db.test.shared_session``), so sync
fixtures and async code see each other's rows and everything is rolled back;
with ``transaction=True`` (or ``transactional_db``) async-db commits and
pytest-django's flush empties the tables. An ``async_db`` mark adds its
``spawned_tasks`` (and ``transaction=True`` also flushes ``tables``).
Without pytest-django, an ``async_db`` mark runs the test inside
``isolated()`` (``flushed()``) on async-db's own connection.

Test databases, once per session (the ``async_db_setup`` fixture):

- with pytest-django active, a marked test is a database test for pytest-django
  too (a ``django_db`` mark with the same ``databases`` and ``transaction`` is
  added unless the test has one): pytest-django's ``django_db_setup`` creates
  the test databases and drops them at the end; ``async_connections`` is
  pointed at them (for pytest-django's own database tests too: a
  ``django_db`` mark, or its ``db``/``transactional_db`` fixtures);
- without it, the plugin creates them itself with Django's
  ``setup_databases()`` (``async_db.test.setup_test_databases``) and drops them
  at the end of the session. It calls ``django.setup()`` first if
  ``DJANGO_SETTINGS_MODULE`` is set and Django is not set up yet.

A database whose ``NAME`` already is its ``TEST["NAME"]`` is used as it is.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from async_db.test import (
    _aliases,
    _close_test_pools,
    _test_transaction_of,
    communicators_in_test_context,
    flushed,
    isolated,
    setup_test_databases,
    shared_session,
    teardown_test_databases,
    use_test_databases,
)

#: Names pytest-django registers under (entry point, or ``-p`` by module).
_PYTEST_DJANGO = ("django", "pytest_django.plugin")
#: pytest-django's fixtures that give a test database access.
_DJANGO_DB_FIXTURES = ("db", "transactional_db", "live_server")


def _django_configured() -> bool:
    from django.conf import settings

    return settings.configured or bool(os.environ.get("DJANGO_SETTINGS_MODULE"))


def _pytest_django_active(config: pytest.Config) -> bool:
    return any(config.pluginmanager.has_plugin(name) for name in _PYTEST_DJANGO)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "async_db(databases=None, transaction=False, tables=None, "
        "spawned_tasks='forbid'): run the async test on the test database in a "
        "rolled-back transaction (or flush tables after it with transaction=True); "
        "spawned_tasks='share': the tasks it spawns share its connection",
    )
    if not _django_configured():
        return
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from async_db import async_connections

    # Read the configured names now, before a test database setup changes
    # settings.DATABASES: use_test_databases() compares against them.
    async_connections.settings  # noqa: B018


def _marker_args(
    databases: Any = None,
    transaction: bool = False,
    tables: Any = None,
    spawned_tasks: str = "forbid",
) -> tuple[Any, bool, Any, str]:
    return databases, transaction, tables, spawned_tasks


def _django_db_args(item: pytest.Item) -> tuple[Any, bool]:
    """``databases`` and ``transaction`` of a pytest-django database test, as
    pytest-django reads them (its mark, or the fixtures it requests)."""
    marker = item.get_closest_marker("django_db")
    databases, transaction = None, False
    if marker is not None:
        kwargs = dict(marker.kwargs)
        if marker.args:
            kwargs.setdefault("transaction", marker.args[0])
        databases = kwargs.get("databases")
        transaction = bool(kwargs.get("transaction", False))
    names = getattr(item, "fixturenames", ())
    if "transactional_db" in names or "live_server" in names:
        transaction = True
    return databases, transaction


def _is_django_db_test(item: pytest.Item) -> bool:
    """A pytest-django database test (its mark, or its fixtures)."""
    if item.get_closest_marker("django_db") is not None:
        return True
    names = getattr(item, "fixturenames", ())
    return any(name in names for name in _DJANGO_DB_FIXTURES)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    # tryfirst: pytest-django sorts items by their django_db marks after us.
    with_pytest_django = _pytest_django_active(config)
    for item in items:
        marker = item.get_closest_marker("async_db")
        function = getattr(item, "obj", None)
        if not inspect.iscoroutinefunction(function):
            continue
        args = (
            _marker_args()
            if marker is None
            else _marker_args(*marker.args, **marker.kwargs)
        )
        databases, transaction, tables, spawned_tasks = args
        if (
            with_pytest_django
            and marker is not None
            and item.get_closest_marker("django_db") is None
        ):
            item.add_marker(
                pytest.mark.django_db(databases=databases, transaction=transaction)
            )
        if with_pytest_django and _is_django_db_test(item):
            databases, django_transaction = _django_db_args(item)
            item.obj = _wrap_django_db(  # type: ignore[attr-defined]
                function,
                item,
                databases,
                transaction=django_transaction,
                flush_tables=transaction if marker is not None else False,
                tables=tables,
                spawned_tasks=spawned_tasks,
                marked=marker is not None,
            )
        elif marker is not None:
            item.obj = _wrap(function, databases, transaction, tables, spawned_tasks)  # type: ignore[attr-defined]


def _isolation(databases: Any, spawned_tasks: str) -> Any:
    if spawned_tasks == "forbid":
        return isolated(databases)
    return isolated(databases, spawned_tasks=spawned_tasks)


def _wrap(
    function: Any,
    databases: Any = None,
    transaction: bool = False,
    tables: Any = None,
    spawned_tasks: str = "forbid",
) -> Any:
    """Without pytest-django: rollback mode (or flush mode) on async-db's own
    connection to the test database."""

    @functools.wraps(function)
    async def run_isolated(*args: Any, **kwargs: Any) -> Any:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(_close_test_pools)
            stack.enter_context(communicators_in_test_context())
            scope = (
                flushed(databases, tables)
                if transaction
                else _isolation(databases, spawned_tasks)
            )
            await stack.enter_async_context(scope)
            return await function(*args, **kwargs)

    return run_isolated


def _wrap_django_db(
    function: Any,
    item: pytest.Item,
    databases: Any,
    *,
    transaction: bool,
    flush_tables: bool,
    tables: Any,
    spawned_tasks: str,
    marked: bool,
) -> Any:
    """A pytest-django database test: in its per-test transaction, async-db
    shares the session of Django's connection (see
    ``async_db.test.shared_session``); with ``transaction=True`` it runs
    normally and pytest-django's flush empties the tables (an ``async_db``
    mark with ``transaction=True`` flushes them itself too)."""

    @functools.wraps(function)
    async def run_on_django_db(*args: Any, **kwargs: Any) -> Any:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(_close_test_pools)
            stack.enter_context(communicators_in_test_context())
            scope = _django_db_scope(
                item.stash.get(_django_connections_key, {}),
                databases,
                transaction,
                flush_tables,
                tables,
                spawned_tasks,
                marked,
            )
            if scope is not None:
                await stack.enter_async_context(scope)
            return await function(*args, **kwargs)

    return run_on_django_db


#: alias -> Django's connection of the test's thread (read outside the loop:
#: inside a running loop ``django.db.connections`` is per context).
_django_connections_key = pytest.StashKey[dict[str, Any]]()


def _django_db_scope(
    sessions: dict[str, Any],
    databases: Any,
    transaction: bool,
    flush_tables: bool,
    tables: Any,
    spawned_tasks: str,
    marked: bool,
) -> Any:
    if transaction:
        return flushed(databases, tables) if flush_tables else None
    # The connections holding pytest-django's per-test transaction.
    if sessions and all(_test_transaction_of(conn) for conn in sessions.values()):
        return shared_session(sessions, spawned_tasks=spawned_tasks)
    return _isolation(databases, spawned_tasks) if marked else None


def _uses_django_db(request: pytest.FixtureRequest) -> bool:
    if not _pytest_django_active(request.config):
        return False
    return _is_django_db_test(request.node)


@pytest.fixture(autouse=True)
def _async_db_marker(request: pytest.FixtureRequest) -> None:
    """Set up the test databases for a test marked ``async_db`` (and, with
    pytest-django, for its database tests: their async-db connections go to
    the test database too)."""
    node = request.node
    if node.get_closest_marker("async_db") is not None or _uses_django_db(request):
        request.getfixturevalue("async_db_setup")
    if _uses_django_db(request):
        from django.db import connections

        # The objects pytest-django's transaction is (or will be) opened on:
        # this sync fixture runs in the test's thread, outside the loop.
        databases = _django_db_args(node)[0]
        node.stash[_django_connections_key] = {
            alias: connections[alias] for alias in _aliases(databases)
        }


def _marked_aliases(items: list[pytest.Item]) -> set[str]:
    """Every alias a marked test of the session uses (as pytest-django's
    ``_get_databases_for_setup`` does for ``django_db``)."""
    from django.db import DEFAULT_DB_ALIAS, connections

    aliases: set[str] = set()
    for item in items:
        marker = item.get_closest_marker("async_db")
        if marker is None:
            continue
        databases = _marker_args(*marker.args, **marker.kwargs)[0]
        if databases is None:
            aliases.add(DEFAULT_DB_ALIAS)
        elif databases == "__all__":
            aliases.update(connections)
        elif isinstance(databases, str):
            aliases.add(databases)
        else:
            aliases.update(databases)
    return aliases


@pytest.fixture(scope="session")
def async_db_setup(request: pytest.FixtureRequest) -> Iterator[None]:
    """The session's test databases, with ``async_connections`` pointing at
    them: pytest-django's (``django_db_setup``) when it is active, otherwise
    created with Django's ``setup_databases()`` and dropped at the end."""
    config = request.config
    if _pytest_django_active(config):
        request.getfixturevalue("django_db_setup")
        use_test_databases()
        yield
        return
    verbosity = max(int(config.option.verbose), 0)
    old_config = setup_test_databases(
        _marked_aliases(request.session.items), verbosity=verbosity
    )
    try:
        yield
    finally:
        teardown_test_databases(old_config, verbosity=verbosity)
