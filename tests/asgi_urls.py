"""A tiny URLconf for driving Django's ASGIHandler in-process."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from async_db import async_connections

seen: dict[str, object] = {}


async def backend_pid_view(request: HttpRequest) -> JsonResponse:
    conn = async_connections["default"]
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        (pid,) = await cursor.fetchone()
    # No cleanup here: the view's task ending releases the connection.
    seen["wrapper"] = conn
    return JsonResponse({"pid": pid})


urlpatterns = [path("pid/", backend_pid_view)]
