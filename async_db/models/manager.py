"""``AsyncManager``: Django's ``Manager`` whose querysets are ``AsyncQuerySet``."""

from __future__ import annotations

from typing import Any

from django.db.models.manager import BaseManager

from async_db.models.query import AsyncQuerySet, async_queryset_class

__all__ = ["AsyncManager"]


class AsyncManager(BaseManager.from_queryset(AsyncQuerySet)):  # type: ignore[misc]
    """A manager whose querysets run Django's async methods natively.

    ``AsyncManager.from_queryset(MyQuerySet)`` keeps ``MyQuerySet``'s own
    methods; if ``MyQuerySet`` isn't an ``AsyncQuerySet`` already, the
    querysets are of a subclass of both.
    """

    @classmethod
    def from_queryset(
        cls, queryset_class: type[Any], class_name: str | None = None
    ) -> type[Any]:
        return super().from_queryset(  # type: ignore[no-any-return]
            async_queryset_class(queryset_class),  # type: ignore[arg-type]
            class_name,
        )
