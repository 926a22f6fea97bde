"""Two workloads, each written three ways doing the same work: raw SQL on
async-db's cursor, the native ORM (what a user of async-db writes), and
Django's ORM on its standard async path.

* Point lookup: ``SELECT id, name, value ... WHERE id = %s``.
  ``item_async_db`` runs it on the request task's async-db cursor;
  ``item_native`` calls ``Item.objects.aget()``, which async-db's native ORM
  runs on the same connection; ``item_orm`` calls Django's own
  ``Item.django_objects.aget()``, which Django runs in a thread through
  ``sync_to_async``.
* Short transaction: ``UPDATE ... SET value = value + 1`` then read the row
  back, committed together. ``bump_async_db`` runs the SQL in
  ``async_atomic``; ``bump_native`` runs ``aupdate()`` and ``aget()`` in
  ``async_atomic``; ``bump_orm`` runs a function using ``transaction.atomic``
  through ``sync_to_async`` (Django has no async transactions).

No view closes anything: async-db releases the request task's connection when
the task ends, Django's ``request_finished`` signal the ORM's.
"""

from __future__ import annotations

import asyncio
import os

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import F, Sum
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from async_db import DEFAULT_DB_ALIAS, async_atomic, async_connections
from benchmarks.http.site.apps import signal_counts
from benchmarks.http.site.models import Item

_TABLE = f'"{Item._meta.db_table}"'
#: The columns and order of ``Item.to_json``.
SELECT_ITEM = f'SELECT "id", "name", "value" FROM {_TABLE} WHERE "id" = %s'
BUMP_ITEM = f'UPDATE {_TABLE} SET "value" = "value" + 1 WHERE "id" = %s'


def item_response(row: tuple[int, str, int] | None) -> JsonResponse:
    if row is None:
        return not_found()
    item_id, name, value = row
    return JsonResponse({"id": item_id, "name": name, "value": value})


def not_found() -> JsonResponse:
    return JsonResponse({"error": "not found"}, status=404)


@require_GET
async def health(request: HttpRequest) -> JsonResponse:
    """No database: is the server up? (Also Django's request signal counts.)"""
    return JsonResponse({"status": "ok", "signals": signal_counts})


@require_GET
async def slow(request: HttpRequest) -> JsonResponse:
    """A query that takes ``?seconds=`` on the server (disconnect tests)."""
    seconds = float(request.GET.get("seconds", "1"))
    async with async_connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        await cursor.execute("SELECT pg_sleep(%s)", [seconds])
    return JsonResponse({"slept": seconds})


@require_GET
async def whoami(request: HttpRequest) -> JsonResponse:
    """Which process served the request, and which server backend its
    connection is (several workers: each process has pools of its own)."""
    async with async_connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        row = await cursor.fetchone()
    assert row is not None
    return JsonResponse({"pid": os.getpid(), "backend_pid": row[0]})


# ##### Point lookup #####


@require_GET
async def item_async_db(request: HttpRequest, pk: int) -> JsonResponse:
    async with async_connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        await cursor.execute(SELECT_ITEM, [pk])
        row = await cursor.fetchone()
    return item_response(row)


@require_GET
async def item_native(request: HttpRequest, pk: int) -> JsonResponse:
    """The native ORM: the query runs on the request task's connection."""
    try:
        item = await Item.objects.aget(pk=pk)
    except Item.DoesNotExist:
        return not_found()
    return JsonResponse(item.to_json())


@require_GET
async def summary(request: HttpRequest) -> JsonResponse:
    """A fan-out: three independent native queries at once, each in a task of
    its own (so on a connection of its own; outside any transaction: a task
    spawned inside one is refused)."""
    count, total, first = await asyncio.gather(
        Item.objects.acount(),
        Item.objects.aaggregate(total=Sum("value")),
        Item.objects.order_by("pk").afirst(),
    )
    return JsonResponse(
        {
            "count": count,
            "total": total["total"],
            "first": None if first is None else first.to_json(),
        }
    )


@require_GET
async def item_orm(request: HttpRequest, pk: int) -> JsonResponse:
    """Django's own ``aget()``: ``get()`` in a thread, on Django's connection."""
    try:
        item = await Item.django_objects.aget(pk=pk)
    except Item.DoesNotExist:
        return not_found()
    return JsonResponse(item.to_json())


# ##### Short transaction: increment, then read back #####


@require_POST
async def bump_async_db(request: HttpRequest, pk: int) -> JsonResponse:
    async with (
        async_atomic(),
        async_connections[DEFAULT_DB_ALIAS].cursor() as cursor,
    ):
        await cursor.execute(BUMP_ITEM, [pk])
        if cursor.rowcount == 0:
            return not_found()
        await cursor.execute(SELECT_ITEM, [pk])
        row = await cursor.fetchone()
    return item_response(row)


@require_POST
async def bump_native(request: HttpRequest, pk: int) -> JsonResponse:
    """The native ORM in ``async_atomic``: the same two statements as
    ``bump_async_db``, in one transaction on the request task's connection."""
    async with async_atomic():
        if await Item.objects.filter(pk=pk).aupdate(value=F("value") + 1) == 0:
            return not_found()
        item = await Item.objects.aget(pk=pk)
    return JsonResponse(item.to_json())


def bump_item(pk: int) -> Item | None:
    """The ORM's transaction (sync): the same two statements as
    ``bump_async_db``, or None if there is no such item."""
    with transaction.atomic():
        if Item.django_objects.filter(pk=pk).update(value=F("value") + 1) == 0:
            return None
        return Item.django_objects.get(pk=pk)


@require_POST
async def bump_orm(request: HttpRequest, pk: int) -> JsonResponse:
    item = await sync_to_async(bump_item)(pk)
    if item is None:
        return not_found()
    return JsonResponse(item.to_json())
