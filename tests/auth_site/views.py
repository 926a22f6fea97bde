"""Async views on the native request path."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import auth
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from tests.auth_site import middleware


@csrf_exempt
async def login(request: HttpRequest) -> HttpResponse:
    """POST username/password: ``aauthenticate``, then ``alogin``."""
    body = json.loads(request.body)
    user = await auth.aauthenticate(
        request, username=body["username"], password=body["password"]
    )
    if user is None:
        return JsonResponse({"user": None}, status=401)
    await auth.alogin(request, user)
    return JsonResponse({"user": user.get_username()})


@csrf_exempt
async def logout(request: HttpRequest) -> HttpResponse:
    await auth.alogout(request)
    return JsonResponse({"user": None})


async def me(request: HttpRequest) -> HttpResponse:
    """``request.auser()``, and a write to the session (a visit counter)."""
    user: Any = await request.auser()
    visits = await request.session.aget("visits", 0) + 1
    await request.session.aset("visits", visits)
    last_login = getattr(user, "last_login", None)
    return JsonResponse(
        {
            "user": user.get_username() if user.is_authenticated else None,
            "visits": visits,
            "last_login": last_login.isoformat() if last_login else None,
        }
    )


async def stats(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "requests": middleware.REQUESTS,
            "sync_connections": middleware.SYNC_CONNECTIONS,
        }
    )
