"""pytest plugin: ``@pytest.mark.async_db`` isolates a test's async writes.

Enable with ``-p async_db.pytest_plugin`` (or ``pytest_plugins``). Then::

    @pytest.mark.async_db                      # rollback mode, alias "default"
    @pytest.mark.async_db(databases="__all__")  # every alias
    @pytest.mark.async_db(transaction=True)     # flush mode (commits for real)

The test coroutine itself is wrapped, so the transaction is opened in the
test's own task: the only task whose connection it can cover (see
``async_db.test``). Works with pytest-asyncio.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pytest

from async_db.test import flushed, isolated


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "async_db(databases=None, transaction=False, tables=None): run the async "
        "test in a rolled-back transaction (or flush tables after it with "
        "transaction=True)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("async_db")
        function = getattr(item, "obj", None)
        if marker is None or not inspect.iscoroutinefunction(function):
            continue
        item.obj = _wrap(function, *marker.args, **marker.kwargs)  # type: ignore[attr-defined]


def _wrap(
    function: Any,
    databases: Any = None,
    transaction: bool = False,
    tables: Any = None,
) -> Any:
    @functools.wraps(function)
    async def run_isolated(*args: Any, **kwargs: Any) -> Any:
        scope = flushed(databases, tables) if transaction else isolated(databases)
        async with scope:
            return await function(*args, **kwargs)

    return run_isolated
