"""The point-lookup row, as the ORM sees it."""

from __future__ import annotations

from django.db import models

from benchmarks._env import ITEMS_TABLE


class Item(models.Model):
    """One row of the lookup table (``id``, ``name``)."""

    id: models.IntegerField[int, int] = models.IntegerField(primary_key=True)
    name: models.TextField[str, str] = models.TextField()

    class Meta:
        app_label = "benchapp"
        # Created by the benchmark with SQL (unique per run), not by migrations.
        managed = False
        db_table = ITEMS_TABLE

    def __str__(self) -> str:
        return str(self.name)
