"""pytest plugin: ``@pytest.mark.async_db`` isolates a test's async writes, on
Django's test database.

Enable with ``-p async_db.pytest_plugin`` (or ``pytest_plugins``). Then::

    @pytest.mark.async_db                      # rollback mode, alias "default"
    @pytest.mark.async_db(databases="__all__")  # every alias
    @pytest.mark.async_db(transaction=True)     # flush mode (commits for real)

The test coroutine itself is wrapped, so the transaction is opened in the
test's own task: the only task whose connection it can cover (see
``async_db.test``). Works with pytest-asyncio. When the test ends, the
wrapper closes the pools of the test's event loop, so no connection is left on
the test database (PostgreSQL refuses to drop a database that has one); with
pytest-django, an async database test that is not marked ``async_db`` (a
``django_db`` mark, or the ``db``/``transactional_db`` fixtures) gets that
much too, without isolation of its async-db writes.

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
from typing import Any

import pytest

from async_db.test import (
    flushed,
    isolated,
    setup_test_databases,
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
        "async_db(databases=None, transaction=False, tables=None): run the async "
        "test on the test database in a rolled-back transaction (or flush tables "
        "after it with transaction=True)",
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
    databases: Any = None, transaction: bool = False, tables: Any = None
) -> tuple[Any, bool, Any]:
    return databases, transaction, tables


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
        if marker is None:
            if with_pytest_django and _is_django_db_test(item):
                item.obj = _wrap_closing_pools(function)  # type: ignore[attr-defined]
            continue
        databases, transaction, tables = _marker_args(*marker.args, **marker.kwargs)
        if with_pytest_django and item.get_closest_marker("django_db") is None:
            item.add_marker(
                pytest.mark.django_db(databases=databases, transaction=transaction)
            )
        item.obj = _wrap(function, databases, transaction, tables)  # type: ignore[attr-defined]


async def _close_pools() -> None:
    """Close the pools of the running loop (the test's), once the releases
    of the test's finished tasks are done: nothing may hold a connection to
    the test database when it is dropped at the end of the session."""
    from async_db import async_connections
    from async_db._storage import wait_released

    await wait_released()
    await async_connections.close_pools()


def _wrap(
    function: Any,
    databases: Any = None,
    transaction: bool = False,
    tables: Any = None,
) -> Any:
    @functools.wraps(function)
    async def run_isolated(*args: Any, **kwargs: Any) -> Any:
        scope = flushed(databases, tables) if transaction else isolated(databases)
        try:
            async with scope:
                return await function(*args, **kwargs)
        finally:
            await _close_pools()

    return run_isolated


def _wrap_closing_pools(function: Any) -> Any:
    """A pytest-django database test that is not marked ``async_db``: no
    isolation of its own (issue 13), but its pools are closed at its end."""

    @functools.wraps(function)
    async def run_closing_pools(*args: Any, **kwargs: Any) -> Any:
        try:
            return await function(*args, **kwargs)
        finally:
            await _close_pools()

    return run_closing_pools


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
