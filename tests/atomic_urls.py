"""Views for the async ATOMIC_REQUESTS tests (driven through ASGIHandler)."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from async_db import async_connections
from async_db.transaction import on_commit

events: list[str] = []
TABLE = {"name": ""}


async def write(request: HttpRequest) -> JsonResponse:
    conn = async_connections["default"]
    async with conn.cursor() as cursor:
        await cursor.execute(
            f"INSERT INTO {TABLE['name']} (name) VALUES (%s)", [request.GET["name"]]
        )
    await on_commit(lambda: events.append("committed " + request.GET["name"]))
    if "fail" in request.GET:
        raise RuntimeError("view failed")
    return JsonResponse({"in_atomic_block": conn.in_atomic_block})


@transaction.non_atomic_requests
async def not_atomic(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"in_atomic_block": async_connections["default"].in_atomic_block}
    )


def sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("sync")


urlpatterns = [
    path("write/", write),
    path("not-atomic/", not_atomic),
    path("sync/", sync_view),
]
