"""Async ATOMIC_REQUESTS through Django's ASGIHandler."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.test import override_settings

from async_db import async_connections
from tests import atomic_urls
from tests.test_lifecycle import asgi_get

MIDDLEWARE = ["async_db.middleware.AsyncAtomicRequestsMiddleware"]


@pytest.fixture
def atomic_requests(table: str) -> Iterator[Any]:
    settings_dict = async_connections.settings["default"]
    settings_dict["ATOMIC_REQUESTS"] = True
    atomic_urls.TABLE["name"] = table
    atomic_urls.events.clear()
    try:
        with override_settings(
            ROOT_URLCONF="tests.atomic_urls",
            ALLOWED_HOSTS=["*"],
            MIDDLEWARE=MIDDLEWARE,
            DEBUG_PROPAGATE_EXCEPTIONS=False,
        ):
            yield ASGIHandler()
    finally:
        settings_dict["ATOMIC_REQUESTS"] = False


def committed(observer: Any, table: str) -> list[str]:
    rows = observer.execute(f"SELECT name FROM {table} ORDER BY id").fetchall()
    return [name for (name,) in rows]


async def test_view_runs_in_a_transaction_and_commits(
    atomic_requests: Any, table: str, observer: Any
) -> None:
    status, body = await asgi_get(atomic_requests, "/write/?name=a")
    assert status == 200
    assert json.loads(body) == {"in_atomic_block": True}
    assert committed(observer, table) == ["a"]
    assert atomic_urls.events == ["committed a"]


async def test_view_error_rolls_back(
    atomic_requests: Any, table: str, observer: Any, caplog: Any
) -> None:
    status, _ = await asgi_get(atomic_requests, "/write/?name=b&fail=1")
    assert status == 500
    assert committed(observer, table) == []
    assert atomic_urls.events == []  # on_commit dropped with the rollback


async def test_non_atomic_requests_is_honoured(atomic_requests: Any) -> None:
    status, body = await asgi_get(atomic_requests, "/not-atomic/")
    assert status == 200
    assert json.loads(body) == {"in_atomic_block": False}


async def test_sync_views_are_left_to_django(atomic_requests: Any) -> None:
    status, body = await asgi_get(atomic_requests, "/sync/")
    assert status == 200 and body == b"sync"


async def test_without_atomic_requests_views_autocommit(
    table: str, observer: Any
) -> None:
    atomic_urls.TABLE["name"] = table
    with override_settings(
        ROOT_URLCONF="tests.atomic_urls", ALLOWED_HOSTS=["*"], MIDDLEWARE=MIDDLEWARE
    ):
        status, body = await asgi_get(ASGIHandler(), "/write/?name=c")
    assert status == 200
    assert json.loads(body) == {"in_atomic_block": False}
    assert committed(observer, table) == ["c"]
