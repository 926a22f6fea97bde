"""``python -m benchmarks.http.auth_site.setup_db``: create the site's tables
in ``$ASYNC_DB_AUTH_SITE_SCHEMA`` (``migrate --run-syncdb``), its user, 30
books by 10 authors with 3 tags each, and a logged-in session made with
Django's sync session store (the format both engines read); print the session
key as the last line of stdout. Sync Django, before the servers start."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.http.auth_site.settings")
os.environ.setdefault("ASYNC_DB_AUTH_SITE_POOL_SIZE", "0")

import django


def main() -> str:
    """Set the database up; the session key."""
    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.db import connections

    from benchmarks.http.auth_site.models import Author, Book, Tag

    call_command("migrate", run_syncdb=True, verbosity=0)
    user = User.objects.create_user("bench", password="bench-pw")
    authors = Author.objects.bulk_create(Author(name=f"author {i}") for i in range(10))
    tags = Tag.objects.bulk_create(Tag(name=f"tag {i}") for i in range(6))
    books = Book.objects.bulk_create(
        Book(title=f"book {i}", author=authors[i % 10]) for i in range(30)
    )
    Through = Book.tags.through
    Through.objects.bulk_create(
        Through(book_id=book.pk, tag_id=tags[(i + j) % 6].pk)
        for i, book in enumerate(books)
        for j in range(3)
    )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    key = session.session_key
    assert key is not None
    connections.close_all()
    return key


if __name__ == "__main__":
    print(main())
