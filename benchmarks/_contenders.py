"""The point-lookup contenders, each as the body of one task.

A body runs one point lookup per id on the connection its task gets the way
an application would get it, and returns how many rows it read:

* ``psycopg pool``: ``async with pool.connection()`` around the task's
  lookups, raw ``AsyncClientCursor``, no prepared statements (what our backend
  uses): the limit for a design on psycopg;
* ``async-db pooled`` / ``async-db unpooled``: ``async_connections[alias]``,
  accessed inside the task; the connection is taken (opened) on first use and
  released when the task ends;
* ``sync_to_async``: Django's sync cursor, each lookup one ``sync_to_async``
  call (``thread_sensitive=True``: one thread, one connection, for everybody);
* ``ORM aget()``: ``await Item.objects.aget(pk=...)`` (Django's own
  ``sync_to_async`` of ``get``);
* ``asyncpg pool``: ``async with pool.acquire()``, ``fetchrow`` (prepared
  statements, binary protocol): the fast-driver reference.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from benchmarks._env import (
    ASYNCPG,
    DJANGO_ALIAS,
    ORM,
    OURS,
    OURS_UNPOOLED,
    POINT_SQL,
    POINT_SQL_ASYNCPG,
    POOLED_ALIAS,
    PSYCOPG,
    SYNC,
    UNPOOLED_ALIAS,
    Bench,
)

#: The body of one task: the lookups of ``ids``; returns the rows read.
TaskBody = Callable[[Sequence[int]], Coroutine[Any, Any, int]]


def _django_lookup(pk: int) -> Any:
    from django.db import connections

    with connections[DJANGO_ALIAS].cursor() as cursor:
        cursor.execute(POINT_SQL, [pk])
        return cursor.fetchone()


#: Wrapped once, as a decorated function in an application would be.
django_lookup = sync_to_async(_django_lookup)


def lookup_bodies(bench: Bench) -> dict[str, TaskBody]:
    """Every contender's task body, in the order they run in round 0."""
    from benchmarks.benchapp.models import Item

    pool, apg_pool = bench.pool, bench.asyncpg_pool

    async def psycopg_pool(ids: Sequence[int]) -> int:
        rows = 0
        async with pool.connection() as conn:
            for pk in ids:
                async with conn.cursor() as cur:
                    await cur.execute(POINT_SQL, [pk])
                    rows += await cur.fetchone() is not None
        return rows

    def ours(alias: str) -> TaskBody:
        async def body(ids: Sequence[int]) -> int:
            from async_db import async_connections

            rows = 0
            conn = async_connections[alias]
            for pk in ids:
                async with conn.cursor() as cur:
                    await cur.execute(POINT_SQL, [pk])
                    rows += await cur.fetchone() is not None
            return rows

        return body

    async def sync(ids: Sequence[int]) -> int:
        rows = 0
        for pk in ids:
            rows += await django_lookup(pk) is not None
        return rows

    async def orm(ids: Sequence[int]) -> int:
        rows = 0
        for pk in ids:
            await Item.objects.aget(pk=pk)
            rows += 1
        return rows

    async def asyncpg_pool(ids: Sequence[int]) -> int:
        rows = 0
        async with apg_pool.acquire() as conn:
            for pk in ids:
                rows += await conn.fetchrow(POINT_SQL_ASYNCPG, pk) is not None
        return rows

    return {
        PSYCOPG: psycopg_pool,
        OURS: ours(POOLED_ALIAS),
        OURS_UNPOOLED: ours(UNPOOLED_ALIAS),
        SYNC: sync,
        ORM: orm,
        ASYNCPG: asyncpg_pool,
    }
