"""The point-lookup row, as the ORM sees it: once as a plain Django model
(Django's own async path, ``sync_to_async``) and once as an ``AsyncModel``
(async-db's native ORM), both on the same table."""

from __future__ import annotations

from django.db import models

from async_db.models import AsyncModel
from benchmarks._env import AUTHORS_TABLE, BOOKS_TABLE, ITEMS_TABLE


class Item(models.Model):
    """One row of the lookup table (``id``, ``name``): Django's ``Manager``,
    whose ``aget()`` runs ``get()`` through ``sync_to_async``."""

    id: models.IntegerField[int, int] = models.IntegerField(primary_key=True)
    name: models.TextField[str, str] = models.TextField()

    class Meta:
        app_label = "benchapp"
        # Created by the benchmark with SQL (unique per run), not by migrations.
        managed = False
        db_table = ITEMS_TABLE

    def __str__(self) -> str:
        return str(self.name)


class NativeItem(AsyncModel):
    """The same row through async-db's native ORM: ``objects`` is an
    ``AsyncManager``, so ``aget()`` runs on the task's async connection."""

    id: models.IntegerField[int, int] = models.IntegerField(primary_key=True)
    name: models.TextField[str, str] = models.TextField()

    class Meta:
        app_label = "benchapp"
        managed = False
        db_table = ITEMS_TABLE

    def __str__(self) -> str:
        return str(self.name)


class Author(models.Model):
    """An author of the cascade-delete benchmark (``benchmarks.orm_delete``):
    a plain Django model, deleted both by Django's ``adelete()`` and by
    ``native(author).adelete()``."""

    id: models.IntegerField[int, int] = models.IntegerField(primary_key=True)
    name: models.TextField[str, str] = models.TextField()

    class Meta:
        app_label = "benchapp"
        managed = False
        db_table = AUTHORS_TABLE

    def __str__(self) -> str:
        return str(self.name)


class Book(models.Model):
    """A book of an :class:`Author`: ``on_delete=CASCADE``, so deleting an
    author deletes their books (Django's collector, not the server)."""

    id: models.IntegerField[int, int] = models.IntegerField(primary_key=True)
    author: models.ForeignKey[Author, Author] = models.ForeignKey(
        Author, on_delete=models.CASCADE
    )
    title: models.TextField[str, str] = models.TextField()

    class Meta:
        app_label = "benchapp"
        managed = False
        db_table = BOOKS_TABLE

    def __str__(self) -> str:
        return str(self.title)
