"""``Item``: the one model. Its table is created by :mod:`.schema`, not by
migrations (the name is per deployment: ``settings.ASYNC_DB_SITE_ITEM_TABLE``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class Item(models.Model):
    # Annotated for mypy without the django-stubs plugin: (set type, get type).
    id: models.AutoField[int, int] = models.AutoField(primary_key=True)
    name: models.CharField[str, str] = models.CharField(max_length=100)
    value: models.IntegerField[int, int] = models.IntegerField(default=0)

    class Meta:
        db_table = settings.ASYNC_DB_SITE_ITEM_TABLE

    def __str__(self) -> str:
        return self.name

    def to_json(self) -> dict[str, Any]:
        """The JSON every item endpoint returns (ORM and async-db alike)."""
        return {"id": self.id, "name": self.name, "value": self.value}
