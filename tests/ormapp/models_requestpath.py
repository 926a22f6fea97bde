"""Models of the native ORM tests, part 2 (requestpath): ``native(instance)``,
``order_with_respect_to``, ``select_on_save`` and plain Django models."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models

from async_db.models import AsyncManager, AsyncModel, AsyncModelMixin


class Question(AsyncModel):
    text = models.CharField(max_length=100)


class Answer(AsyncModel):
    """``order_with_respect_to``: inserts fill ``_order`` with a query."""

    question = models.ForeignKey(Question, on_delete=models.CASCADE)
    text = models.CharField(max_length=100)

    class Meta:
        order_with_respect_to = "question"


class SelectOnSave(AsyncModel):
    """``select_on_save``: an update first checks that the row exists."""

    name = models.CharField(max_length=50)
    n = models.IntegerField(default=0)

    class Meta:
        select_on_save = True


class PlainThing(models.Model):
    """A plain Django model (not an ``AsyncModel``): ``native(instance)``."""

    name = models.CharField(max_length=50)
    n = models.IntegerField(default=0)
    note = models.TextField(default="")


class SaveOverride(models.Model):
    """Overrides ``save()`` and ``delete()``: a native save would skip them."""

    name = models.CharField(max_length=50)

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.name = self.name.upper()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return super().delete(*args, **kwargs)


class Member(AsyncModelMixin, AbstractBaseUser):
    """A custom user model on the mixin: ``AbstractBaseUser.save()``'s work
    (``password_changed()``) must not be skipped by ``asave()``."""

    name = models.CharField(max_length=50, unique=True)

    USERNAME_FIELD = "name"

    objects = AsyncManager()


#: The models this module defines (models.py imports them all).
__all__: list[str] = [
    "Answer",
    "Member",
    "PlainThing",
    "Question",
    "SaveOverride",
    "SelectOnSave",
]
