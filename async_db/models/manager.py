"""``AsyncManager``: Django's ``Manager`` whose querysets are ``AsyncQuerySet``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from django.db import NotSupportedError
from django.db.models.manager import BaseManager

from async_db.models.fields.related_descriptors import install_related_twins
from async_db.models.query import AsyncQuerySet, async_queryset_class

__all__ = ["AsyncManager"]

#: Where Django builds related managers from a model's default manager class.
_RELATED_MANAGER_MODULES = frozenset(
    {
        "django.db.models.fields.related_descriptors",
        "django.contrib.contenttypes.fields",
    }
)
#: Their async writes, which Django implements with sync_to_async.
_RELATED_ASYNC_WRITES = (
    "acreate",
    "aget_or_create",
    "aupdate_or_create",
    "aadd",
    "aremove",
    "aclear",
    "aset",
)


def _refuse_related(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedError(
            f"{name}() of a related manager of {self.model._meta.label} is not "
            f"native; Django's would run the sync ORM in a thread, "
            f"outside the task's transaction. Use the model's own manager, e.g. "
            f"{self.model.__name__}.objects.acreate(...)."
        )

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


class AsyncManager(BaseManager.from_queryset(AsyncQuerySet)):  # type: ignore[misc]
    """A manager whose querysets run Django's async methods natively.

    ``AsyncManager.from_queryset(MyQuerySet)`` keeps ``MyQuerySet``'s own
    methods; if ``MyQuerySet`` isn't an ``AsyncQuerySet`` already, the
    querysets are of a subclass of both.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Django builds related managers (``author.book_set``) as subclasses
        of the related model's default manager class: their reads are native
        (they filter an ``AsyncQuerySet``). Their async writes, which Django
        runs through ``sync_to_async``, are replaced: by the native twins of
        ``async_db.models.fields.related_descriptors`` for reverse foreign
        keys, many-to-many and generic relations; by ``NotSupportedError``
        (instead of silently leaving the task's connection) for a related
        manager class those factories' twins don't know."""
        super().__init_subclass__(**kwargs)
        if cls.__module__ in _RELATED_MANAGER_MODULES:
            if install_related_twins(cls):
                return
            for name in _RELATED_ASYNC_WRITES:
                if name in cls.__dict__:
                    setattr(cls, name, _refuse_related(name))

    @classmethod
    def from_queryset(
        cls, queryset_class: type[Any], class_name: str | None = None
    ) -> type[Any]:
        return super().from_queryset(  # type: ignore[no-any-return]
            async_queryset_class(queryset_class),  # type: ignore[arg-type]
            class_name,
        )
