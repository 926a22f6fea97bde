"""``Item``: the one model, an ``AsyncModel`` of async-db's native ORM. Its
table is created by :mod:`.schema`, not by migrations (the name is per
deployment: ``settings.ASYNC_DB_SITE_ITEM_TABLE``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from async_db.models import AsyncManager, AsyncModel


class Item(AsyncModel):
    """``Item.objects`` is an ``AsyncManager``: its async methods (``aget``,
    ``aupdate``, ...) run natively on the request task's async-db connection.
    ``Item.django_objects`` is Django's own ``Manager``, whose async methods
    run the sync ORM in a thread (``sync_to_async``): the benchmark's "orm"
    contender, kept to compare against."""

    # Annotated for mypy without the django-stubs plugin: (set type, get type).
    id: models.AutoField[int, int] = models.AutoField(primary_key=True)
    name: models.CharField[str, str] = models.CharField(max_length=100)
    value: models.IntegerField[int, int] = models.IntegerField(default=0)

    objects = AsyncManager()
    django_objects: models.Manager[Item] = models.Manager()

    class Meta:
        db_table = settings.ASYNC_DB_SITE_ITEM_TABLE
        default_manager_name = "objects"

    def __str__(self) -> str:
        return self.name

    def to_json(self) -> dict[str, Any]:
        """The JSON every item endpoint returns (ORM and async-db alike)."""
        return {"id": self.id, "name": self.name, "value": self.value}
