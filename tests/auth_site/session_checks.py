"""``python -m tests.auth_site.session_checks``: async-db's session engine
against Django's own ``db`` engine on the site's database (JSON on stdout).

Each check runs its async part under a ``connection_created`` counter (no sync
connection may be opened), and its sync part with Django's engine, outside.
"""

import asyncio
import datetime
import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.auth_site.settings")

import django

django.setup()

from django.contrib.sessions.backends.base import CreateError, UpdateError  # noqa: E402
from django.contrib.sessions.backends.db import (  # noqa: E402
    SessionStore as DjangoStore,
)
from django.contrib.sessions.models import Session  # noqa: E402
from django.db import connections  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.utils import timezone  # noqa: E402

from async_db.contrib.sessions.backends.db import SessionStore  # noqa: E402

opened: list[str] = []
connection_created.connect(lambda sender, connection, **kw: opened.append("sync"))


async def native_checks() -> dict[str, object]:
    results: dict[str, object] = {}
    # Created natively, read by Django's sync engine (checked after).
    kept = SessionStore()
    await kept.aset("k", [1, "two"])
    await kept.asave()
    results["created_key"] = kept.session_key
    store = SessionStore()
    await store.aset("k", [1, "two"])
    await store.asave()
    # A key another engine wrote (sync, before this ran) loads natively.
    other = SessionStore(os.environ["SYNC_KEY"])
    results["sync_written"] = await other.aget("from", None)
    # acycle_key keeps the data under a new key; the old row is gone.
    old = store.session_key
    await store.acycle_key()
    results["cycled"] = [
        store.session_key != old,
        await store.aget("k"),
        await store.aexists(old),
        await store.aexists(store.session_key),
    ]
    results["cycled_key"] = store.session_key
    # Saving a session deleted meanwhile: Django's UpdateError.
    gone = SessionStore()
    await gone.aset("x", 1)
    await gone.asave()
    await SessionStore().adelete(gone.session_key)
    try:
        await gone.asave()
        results["update_error"] = False
    except UpdateError:
        results["update_error"] = True
    # must_create on an existing key: Django's CreateError.
    dup = SessionStore(store.session_key)
    await dup.aget("k")
    try:
        await dup.asave(must_create=True)
        results["create_error"] = False
    except CreateError:
        results["create_error"] = True
    # aflush: data cleared, row deleted, no key.
    flushed = SessionStore(store.session_key)
    await flushed.aflush()
    results["flushed"] = [flushed.session_key, await flushed.aexists(old)]
    # aclear_expired deletes the expired rows only.
    results["expired_before"] = await Session.objects.filter(
        session_key=os.environ["EXPIRED_KEY"]
    ).aexists()
    await SessionStore.aclear_expired()
    results["expired_after"] = await Session.objects.filter(
        session_key=os.environ["EXPIRED_KEY"]
    ).aexists()
    results["kept_after"] = await Session.objects.filter(
        session_key=os.environ["SYNC_KEY"]
    ).aexists()
    return results


def main() -> None:
    sync = DjangoStore()
    sync["from"] = "django"
    sync.save()
    expired = DjangoStore()
    expired["old"] = True
    expired.set_expiry(timezone.now() - datetime.timedelta(days=1))
    expired.save()
    os.environ["SYNC_KEY"] = sync.session_key
    os.environ["EXPIRED_KEY"] = expired.session_key
    connections.close_all()
    opened.clear()
    results = asyncio.run(native_checks())
    results["sync_connections_during_native"] = list(opened)
    # Django's sync engine reads what async-db's wrote, and vice versa above.
    results["django_reads_created"] = DjangoStore(results["created_key"]).load()
    connections.close_all()
    print(json.dumps(results))


main()
