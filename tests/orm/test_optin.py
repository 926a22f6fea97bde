"""Issue 12, item 5: the global opt-in (``"async_db"`` in ``INSTALLED_APPS``,
``ASYNC_DB = {"NATIVE_ORM": True}``): Django's async methods of every model,
``django.contrib``'s included, run natively; off by default, reversible.

The settings are read by ``AsyncDbConfig.ready()``: checked in subprocesses
with their own settings. The patched behaviour is checked in this process
with ``patch()``/``unpatch()`` around each test, so the opt-in never leaks
into the rest of the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes import fields as generic_fields
from django.contrib.contenttypes.models import ContentType
from django.db import NotSupportedError
from django.db.models import Model, QuerySet
from django.db.models import query as django_query
from django.db.models.fields import related_descriptors

from async_db import _native_orm, async_atomic
from async_db.models import native
from async_db.models.query import AsyncQuerySet
from tests.orm_parity import SyncConnectionCounter, method_parity, parity
from tests.ormapp.models import Book, SaveOverride

pytestmark = pytest.mark.usefixtures("orm")

#: Django's async methods of querysets (and so of managers).
QUERYSET_ASYNC_METHODS = (
    "__aiter__",
    "aaggregate",
    "abulk_create",
    "abulk_update",
    "acontains",
    "acount",
    "acreate",
    "adelete",
    "aearliest",
    "aexists",
    "aexplain",
    "afirst",
    "aget",
    "aget_or_create",
    "ain_bulk",
    "aiterator",
    "alast",
    "alatest",
    "aupdate",
    "aupdate_or_create",
)
MODEL_ASYNC_METHODS = ("asave", "adelete", "arefresh_from_db")


def snapshot() -> dict[str, Any]:
    import django.contrib.auth
    import django.db.models

    return {
        "QuerySet": dict(vars(QuerySet)),
        "RawQuerySet": dict(vars(django_query.RawQuerySet)),
        "Model": dict(vars(Model)),
        "factories": (
            related_descriptors.create_reverse_many_to_one_manager,
            related_descriptors.create_forward_many_to_many_manager,
            generic_fields.create_generic_related_manager,
        ),
        "aprefetch": (
            django_query.aprefetch_related_objects,
            django.db.models.aprefetch_related_objects,
        ),
        "auth": (
            django.contrib.auth.aauthenticate,
            django.contrib.auth.alogin,
            django.contrib.auth.alogout,
        ),
    }


@pytest.fixture
def opted_in() -> Iterator[None]:
    before = snapshot()
    _native_orm.patch()
    try:
        yield
    finally:
        _native_orm.unpatch()
    assert snapshot() == before  # unpatch() restores every original


@pytest.fixture
def no_sync_connection() -> Iterator[None]:
    with SyncConnectionCounter() as counter:
        yield
    assert counter.opened == []


class Rollback(Exception):
    pass


def test_nothing_is_patched_by_default() -> None:
    assert not _native_orm.is_patched()
    for name in QUERYSET_ASYNC_METHODS:
        assert getattr(QuerySet, name).__module__ == "django.db.models.query", name
    for name in MODEL_ASYNC_METHODS:
        assert getattr(Model, name).__module__ == "django.db.models.base", name


def test_patch_swaps_djangos_async_methods_and_unpatch_restores_them(
    opted_in: None,
) -> None:
    import django.contrib.auth
    import django.db.models

    from async_db.contrib import auth
    from async_db.models import aprefetch_related_objects
    from async_db.models.query import AsyncRawQuerySet

    assert _native_orm.is_patched()
    for name in QUERYSET_ASYNC_METHODS:
        assert vars(QuerySet)[name] is vars(AsyncQuerySet)[name], name
    for name in MODEL_ASYNC_METHODS:
        assert getattr(Model, name).__module__ == "async_db._native_orm", name
    assert django.contrib.auth.alogin is auth.alogin
    assert django.contrib.auth.alogout is auth.alogout
    assert django.contrib.auth.aauthenticate is auth.aauthenticate
    assert django.db.models.aprefetch_related_objects is aprefetch_related_objects
    assert (
        vars(django_query.RawQuerySet)["__aiter__"]
        is (vars(AsyncRawQuerySet)["__aiter__"])
    )
    _native_orm.patch()  # idempotent
    assert vars(QuerySet)["aget"] is vars(AsyncQuerySet)["aget"]


def test_generic_related_managers_get_the_native_writes_with_the_opt_in() -> None:
    """contenttypes' factory builds classes with the native async writes
    under the opt-in, and Django's own without it."""
    from async_db.models.fields.related_descriptors import (
        GenericRelatedManagerTwins,
    )
    from tests.ormapp.models import RelShelf

    def build() -> Any:
        factory = generic_fields.create_generic_related_manager
        return factory(type(Group.objects), RelShelf.notes.rel)

    assert build().aadd.__module__ == "django.contrib.contenttypes.fields"
    _native_orm.patch()
    try:
        built = build()
        for name in ("aadd", "aremove", "aclear", "aset", "acreate"):
            assert getattr(built, name) is vars(GenericRelatedManagerTwins)[name]
    finally:
        _native_orm.unpatch()
    assert build().aadd.__module__ == "django.contrib.contenttypes.fields"


@pytest.mark.usefixtures("opted_in", "no_sync_connection")
async def test_contrib_auth_user_is_native(observer: Any) -> None:
    with pytest.raises(Rollback):
        async with async_atomic():
            user = await User.objects.acreate_user("optin-ann", password="pw-1")
            assert user._password is None  # AbstractBaseUser.save's twin ran
            # The block sees its own row, through every kind of call.
            same = await User.objects.aget_by_natural_key("optin-ann")
            assert await same.acheck_password("pw-1")
            assert await User.objects.filter(username="optin-ann").acount() == 1
            assert [u.pk async for u in User.objects.filter(pk=user.pk)] == [user.pk]
            raw = [u async for u in User.objects.raw("SELECT * FROM auth_user")]
            assert [u.username for u in raw] == ["optin-ann"]
            user.first_name = "Ann"
            await user.asave(update_fields=["first_name"])
            await User.objects.filter(pk=user.pk).aupdate(last_name="Lee")
            await user.arefresh_from_db(fields=["last_name"])
            assert (user.first_name, user.last_name) == ("Ann", "Lee")
            group = await Group.objects.acreate(name="optin-ann-group")
            await user.groups.aadd(group)
            # Model.adelete: Django's cascade (the groups through row), natively.
            assert await user.adelete() == (
                2,
                {"auth.User_groups": 1, "auth.User": 1},
            )
            assert user.pk is None
            raise Rollback
    (count,) = observer.execute(
        "SELECT count(*) FROM auth_user WHERE username = 'optin-ann'"
    ).fetchone()
    assert count == 0  # every write was in the rolled-back transaction


@pytest.mark.usefixtures("opted_in", "no_sync_connection")
async def test_contrib_auth_related_managers_are_native() -> None:
    with pytest.raises(Rollback):
        async with async_atomic():
            user = await User.objects.acreate(username="optin-groups")
            group = await Group.objects.acreate(name="optin-editors")
            await user.groups.aadd(group)
            assert [g.name async for g in user.groups.all()] == ["optin-editors"]
            assert await group.user_set.acount() == 1
            await user.groups.aclear()
            assert not await user.groups.aexists()
            raise Rollback


@pytest.mark.usefixtures("opted_in", "no_sync_connection")
async def test_contenttypes_are_native() -> None:
    with pytest.raises(Rollback):
        async with async_atomic():
            ct, created = await ContentType.objects.aget_or_create(
                app_label="optin", model="thing"
            )
            assert created
            again = await ContentType.objects.aget(app_label="optin", model="thing")
            assert again.pk == ct.pk
            assert await ContentType.objects.filter(app_label="optin").acount() == 1
            raise Rollback


@pytest.mark.usefixtures("opted_in")
async def test_patched_methods_in_parity_with_the_sync_orm() -> None:
    await parity(lambda: ContentType.objects.order_by("pk"))
    await parity(lambda: Group.objects.all())
    await method_parity(lambda: User.objects.all(), "count")
    await method_parity(lambda: User.objects.filter(pk=-1), "get")
    # Models of part 1 keep working as before.
    assert (await Book.objects.aget(title="A1")).pages == 320


@pytest.mark.usefixtures("opted_in")
async def test_a_model_overriding_save_is_refused_not_skipped() -> None:
    with pytest.raises(NotSupportedError, match=r"SaveOverride overrides save\(\)"):
        await SaveOverride(name="x").asave()


def run_setup(installed: list[str], extra: str = "") -> dict[str, Any]:
    """``django.setup()`` in a fresh interpreter with these settings; what it
    patched."""
    script = textwrap.dedent(
        f"""
        import json
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS={installed!r},
            {extra}
        )
        try:
            django.setup()
        except Exception as exc:
            print(json.dumps({{"error": f"{{type(exc).__name__}}: {{exc}}"}}))
            raise SystemExit
        from django.db.models import Model, QuerySet
        import django.contrib.auth
        from async_db import _native_orm
        print(json.dumps({{
            "patched": _native_orm.is_patched(),
            "aget": QuerySet.aget.__module__,
            "asave": Model.asave.__module__,
            "alogin": django.contrib.auth.alogin.__module__,
        }}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


APPS = ["django.contrib.contenttypes", "django.contrib.auth", "async_db"]


def test_the_setting_is_read_when_the_registry_is_ready() -> None:
    assert run_setup(APPS, 'ASYNC_DB={"NATIVE_ORM": True},') == {
        "patched": True,
        "aget": "async_db.models.query",
        "asave": "async_db._native_orm",
        "alogin": "async_db.contrib.auth",
    }


def test_without_the_setting_nothing_of_django_is_patched() -> None:
    django_own = {
        "patched": False,
        "aget": "django.db.models.query",
        "asave": "django.db.models.base",
        "alogin": "django.contrib.auth",
    }
    assert run_setup(APPS) == django_own
    assert run_setup(APPS, 'ASYNC_DB={"NATIVE_ORM": False},') == django_own
    # Without the app, the setting alone does nothing either.
    assert run_setup(APPS[:2], 'ASYNC_DB={"NATIVE_ORM": True},') == django_own


def test_a_wrong_setting_is_an_error_naming_it() -> None:
    assert run_setup(APPS, 'ASYNC_DB={"NATIVE_ORM": "yes"},') == {
        "error": 'ImproperlyConfigured: ASYNC_DB["NATIVE_ORM"] must be True or '
        "False, not 'yes'."
    }


async def test_login_signals_run_in_the_task_with_update_last_login_native(
    observer: Any,
) -> None:
    """``async_db.contrib.auth.asend`` (what the twins of ``alogin``/``alogout``
    send with): Django's ``update_last_login`` replaced by its native twin,
    inside the task's transaction; async receivers awaited in the task, in
    order; other sync receivers in a thread, as ``Signal.asend``."""
    import asyncio
    import threading

    from django.contrib.auth.models import update_last_login
    from django.contrib.auth.signals import user_logged_in

    from async_db.contrib.auth import asend

    calls: list[tuple[str, Any]] = []

    async def async_receiver(sender: Any, user: Any, **kwargs: Any) -> str:
        calls.append(("async", asyncio.current_task()))
        return "async"

    def sync_receiver(sender: Any, user: Any, **kwargs: Any) -> str:
        calls.append(("sync", threading.get_ident()))
        return "sync"

    user_logged_in.connect(async_receiver)
    user_logged_in.connect(sync_receiver)
    try:
        with SyncConnectionCounter() as counter, pytest.raises(Rollback):
            async with async_atomic():
                user = await native(User).acreate(username="optin-login")
                assert user.last_login is None
                responses = await asend(
                    user_logged_in, sender=User, request=None, user=user
                )
                # The block sees the last_login the receiver wrote.
                again = await native(User).aget(pk=user.pk)
                assert again.last_login == user.last_login is not None
                raise Rollback
    finally:
        user_logged_in.disconnect(async_receiver)
        user_logged_in.disconnect(sync_receiver)
    assert counter.opened == []
    assert [r for r, _ in responses] == [
        update_last_login,
        sync_receiver,
        async_receiver,
    ]
    assert [kind for kind, _ in calls] == ["sync", "async"]
    assert calls[0][1] != threading.get_ident()  # a thread, as Signal.asend
    assert calls[1][1] is asyncio.current_task()  # the calling task
    (count,) = observer.execute(
        "SELECT count(*) FROM auth_user WHERE username = 'optin-login'"
    ).fetchone()
    assert count == 0


@pytest.mark.usefixtures("opted_in", "no_sync_connection")
async def test_aauthenticate_is_native_and_its_failure_signal_in_the_task() -> None:
    import asyncio

    import django.contrib.auth
    from django.contrib.auth.signals import user_login_failed

    failed: list[Any] = []

    async def on_failure(sender: Any, credentials: Any, **kwargs: Any) -> None:
        failed.append((sender, credentials, asyncio.current_task()))

    user_login_failed.connect(on_failure)
    try:
        with pytest.raises(Rollback):
            async with async_atomic():
                await User.objects.acreate_user("optin-auth", password="right-pw")
                user = await django.contrib.auth.aauthenticate(
                    username="optin-auth", password="right-pw"
                )
                assert user.get_username() == "optin-auth"
                assert user.backend == "django.contrib.auth.backends.ModelBackend"
                assert (
                    await django.contrib.auth.aauthenticate(
                        username="optin-auth", password="wrong"
                    )
                    is None
                )
                raise Rollback
    finally:
        user_login_failed.disconnect(on_failure)
    assert failed == [
        (
            "django.contrib.auth",
            {"username": "optin-auth", "password": "********************"},
            asyncio.current_task(),
        )
    ]
