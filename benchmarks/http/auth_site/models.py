"""Plain Django models (no async-db base class): under the opt-in their async
methods run natively, otherwise on Django's own async path. Their tables are
created by ``migrate --run-syncdb`` (the app has no migrations)."""

from __future__ import annotations

from typing import Any

from django.db import models


class Author(models.Model):
    name: models.CharField[str, str] = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name: models.CharField[str, str] = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Book(models.Model):
    title: models.CharField[str, str] = models.CharField(max_length=100)
    author: models.ForeignKey[Author, Author] = models.ForeignKey(
        Author, on_delete=models.CASCADE
    )
    tags: models.ManyToManyField[Tag, Any] = models.ManyToManyField(Tag)

    def __str__(self) -> str:
        return self.title
