"""The site's views: the same code on both servers (see the package)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from benchmarks.http.auth_site.models import Book

#: Books per response.
PAGE = 10


async def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


async def books(request: HttpRequest) -> JsonResponse:
    """The session and the user, then 10 books with their author (a join)
    and their tags (a second query): 4 queries in all (session, user, books,
    tags). 403 for an anonymous request."""
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"error": "log in"}, status=403)
    page = [
        book
        async for book in Book.objects.select_related("author")
        .prefetch_related("tags")
        .order_by("id")[:PAGE]
    ]
    return JsonResponse(
        {
            "user": user.get_username(),
            "books": [
                {
                    "id": book.pk,
                    "title": book.title,
                    "author": book.author.name,
                    "tags": [tag.name for tag in book.tags.all()],
                }
                for book in page
            ],
        }
    )
