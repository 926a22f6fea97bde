"""Django's ORM, evaluated natively on the current task's async connection.

Import after ``django.setup()`` (like any models module)::

    from async_db.models import AsyncModel, AsyncManager, AsyncQuerySet, native

See ``docs/orm.rst``.
"""

from async_db.models.base import AsyncModel, AsyncModelMixin
from async_db.models.manager import AsyncManager
from async_db.models.query import AsyncQuerySet, aprefetch_related_objects, native

__all__ = [
    "AsyncManager",
    "AsyncModel",
    "AsyncModelMixin",
    "AsyncQuerySet",
    "aprefetch_related_objects",
    "native",
]
