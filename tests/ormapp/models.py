"""Models of the native ORM tests (issue 11)."""

from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models

from async_db.models import AsyncManager, AsyncModel, AsyncModelMixin, AsyncQuerySet


class Country(AsyncModel):
    name = models.CharField(max_length=50, unique=True)

    class Meta:
        ordering = ["name"]


class Author(AsyncModel):
    name = models.CharField(max_length=100, unique=True)
    age = models.IntegerField(null=True)
    country = models.ForeignKey(Country, null=True, on_delete=models.SET_NULL)
    data = models.JSONField(default=dict)
    score = models.DecimalField(max_digits=8, decimal_places=2, null=True)
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    duration = models.DurationField(null=True)
    tags = ArrayField(models.CharField(max_length=20), default=list)
    created = models.DateTimeField(null=True)
    born = models.DateField(null=True)

    class Meta:
        get_latest_by = "created"


class BookQuerySet(models.QuerySet):  # a plain Django queryset, made native
    def long(self) -> BookQuerySet:
        return self.filter(pages__gte=300)


class Book(AsyncModel):
    title = models.CharField(max_length=100)
    pages = models.IntegerField(default=100)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    editor = models.ForeignKey(
        Author, null=True, on_delete=models.SET_NULL, related_name="edited"
    )
    published = models.DateTimeField(null=True)

    objects = AsyncManager.from_queryset(BookQuerySet)()


class Note(AsyncModel):
    """No relation points here: deletes take Django's fast path."""

    text = models.CharField(max_length=100)
    n = models.IntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)


class Item(AsyncModelMixin, models.Model):
    """A model that keeps its own base class: the mixin, and the manager."""

    name = models.CharField(max_length=50, unique=True)
    qty = models.IntegerField(default=0)

    objects = AsyncManager()


class CustomQuerySet(AsyncQuerySet):
    def named(self, name: str) -> CustomQuerySet:
        return self.filter(name=name)


class Gadget(AsyncModel):
    name = models.CharField(max_length=50)

    objects = CustomQuerySet.as_manager()


class Place(AsyncModel):
    name = models.CharField(max_length=50)


class Restaurant(Place):
    """Multi-table inheritance: saves write both tables natively."""

    seats = models.IntegerField(default=0)


# Part 2's models (issue 12), one module per area so their owners don't collide.
from tests.ormapp.models_deletion import *  # noqa: E402, F403
from tests.ormapp.models_relations import *  # noqa: E402, F403
from tests.ormapp.models_requestpath import *  # noqa: E402, F403
