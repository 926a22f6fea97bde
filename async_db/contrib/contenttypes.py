"""Native twins of ``ContentTypeManager``'s lookups, for code that must not
query while Django's sync code runs.

``ContentType.objects.get_for_model()``/``get_for_id()`` answer from a
per-database cache and query on a miss (a sync query: in a native call,
``SynchronousOnlyOperation``). :func:`aget_for_model` and
:func:`aget_for_id` answer from the same cache, read a miss natively on the
task's connection, and fill Django's cache, so Django's own code that looks
the content type up afterwards (a ``GenericForeignKey``'s or a
``GenericRelation``'s prefetch, ``bulk_related_objects``) does no I/O.
Needs ``django.contrib.contenttypes`` in ``INSTALLED_APPS``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["aget_for_id", "aget_for_model"]


def _manager(using: str | None) -> Any:
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.db_manager(using)


async def aget_for_model(
    model: Any, using: str | None = None, for_concrete_model: bool = True
) -> Any:
    """Async twin of ``ContentType.objects.db_manager(using).get_for_model()``:
    the cache first, then a native ``get``, then ``get_or_create``."""
    from django.contrib.contenttypes.models import ContentType

    from async_db.models.query import native

    manager = _manager(using)
    opts = manager._get_opts(model, for_concrete_model)
    try:
        return manager._get_from_cache(opts)
    except KeyError:
        pass
    try:
        ct = await native(manager).aget(app_label=opts.app_label, model=opts.model_name)
    except ContentType.DoesNotExist:
        ct, _ = await native(manager).aget_or_create(
            app_label=opts.app_label, model=opts.model_name
        )
    manager._add_to_cache(manager.db, ct)
    return ct


async def aget_for_id(id: Any, using: str | None = None) -> Any:
    """Async twin of ``ContentType.objects.db_manager(using).get_for_id()``:
    the cache first, then a native ``get(pk=id)``; Django's ``DoesNotExist``
    for an unknown id."""
    from async_db.models.query import native

    manager = _manager(using)
    try:
        return manager._cache[manager.db][id]
    except KeyError:
        pass
    ct = await native(manager).aget(pk=id)
    manager._add_to_cache(manager.db, ct)
    return ct
