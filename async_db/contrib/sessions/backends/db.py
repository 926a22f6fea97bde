"""``SESSION_ENGINE = "async_db.contrib.sessions.backends.db"``.

Django's ``django.contrib.sessions.backends.db`` engine (same ``Session``
model, table and encoding: sync and async code share sessions) whose async
methods run natively on the task's async connection. Django's run them with
the sync ORM in a thread (``asave`` in ``sync_to_async`` because
``transaction.atomic`` is sync); here each is the async twin of the sync
method it names, with ``async_atomic`` for ``transaction.atomic`` and the
queries through :func:`async_db.models.native`, so they are native with or
without the global opt-in. ``aload``, ``acreate``, ``aflush``,
``acycle_key``, ``aget``/``aset`` & co. are Django's, built on these. The sync
methods are Django's, unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.core.exceptions import SuspiciousOperation
from django.db import DatabaseError, IntegrityError, router
from django.utils import timezone

from async_db.models import native
from async_db.models.base import adelete_instance, asave_instance
from async_db.transaction import async_atomic

__all__ = ["SessionStore"]


class SessionStore(DjangoSessionStore):
    """Django's database session store, with native async methods."""

    async def _aget_session_from_db(self) -> Any:
        """Async twin of ``SessionStore._get_session_from_db()``."""
        try:
            return await native(self.model.objects).aget(
                session_key=self.session_key, expire_date__gt=timezone.now()
            )
        except (self.model.DoesNotExist, SuspiciousOperation) as e:
            if isinstance(e, SuspiciousOperation):
                logger = logging.getLogger(f"django.security.{e.__class__.__name__}")
                logger.warning(str(e))
            self._session_key = None
            return None

    async def aexists(self, session_key: str) -> bool:
        """Async twin of ``SessionStore.exists()``."""
        return await native(
            self.model.objects.filter(session_key=session_key)
        ).aexists()

    async def asave(self, must_create: bool = False) -> None:
        """Async twin of ``SessionStore.save()``: the row is written in
        ``async_atomic(using=...)``, as Django's in ``transaction.atomic``;
        ``CreateError``/``UpdateError`` as Django raises them."""
        if self.session_key is None:
            await self.acreate()
            return None
        data = await self._aget_session(no_load=must_create)  # type: ignore[attr-defined]
        obj = await self.acreate_model_instance(data)
        using = router.db_for_write(self.model, instance=obj)
        try:
            async with async_atomic(using=using):
                await asave_instance(
                    obj,
                    force_insert=must_create,
                    force_update=not must_create,
                    using=using,
                )
        except IntegrityError as exc:
            if must_create:
                raise CreateError from exc
            raise
        except DatabaseError as exc:
            if not must_create:
                raise UpdateError from exc
            raise
        return None

    async def adelete(self, session_key: str | None = None) -> None:
        """Async twin of ``SessionStore.delete()``."""
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        try:
            obj = await native(self.model.objects).aget(session_key=session_key)
            await adelete_instance(obj)
        except self.model.DoesNotExist:
            pass

    @classmethod
    async def aclear_expired(cls) -> None:
        """Async twin of ``SessionStore.clear_expired()``."""
        await native(
            cls.get_model_class().objects.filter(expire_date__lt=timezone.now())
        ).adelete()
