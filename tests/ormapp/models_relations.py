"""Models of the native ORM tests, part 2 (relations and prefetch_related).

Every relation kind Django's related managers and prefetchers handle: a
nullable reverse foreign key (``remove``/``clear`` exist), a non-nullable one
(they don't), a one-to-one, an auto-created many-to-many, a symmetrical one
to self, and one with a custom ``through`` model (``through_defaults``).
"""

from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models

from async_db.models import AsyncModel

#: The models this module defines (models.py imports them all).
__all__: list[str] = [
    "RelArticle",
    "RelChapter",
    "RelClub",
    "RelCover",
    "RelMembership",
    "RelNote",
    "RelPerson",
    "RelShelf",
    "RelTag",
    "RelVolume",
]


class RelShelf(AsyncModel):
    name = models.CharField(max_length=50, unique=True)
    notes = GenericRelation("RelNote")

    class Meta:
        ordering = ["name"]


class RelVolume(AsyncModel):
    """A nullable foreign key: ``shelf.volumes`` has ``aremove``/``aclear``."""

    title = models.CharField(max_length=50, unique=True)
    shelf = models.ForeignKey(
        RelShelf, null=True, on_delete=models.SET_NULL, related_name="volumes"
    )

    class Meta:
        ordering = ["title"]


class RelChapter(AsyncModel):
    """A non-nullable foreign key: ``volume.chapters`` has no ``aremove``."""

    title = models.CharField(max_length=50)
    number = models.IntegerField(default=1)
    volume = models.ForeignKey(
        RelVolume, on_delete=models.CASCADE, related_name="chapters"
    )

    class Meta:
        ordering = ["volume_id", "number"]


class RelCover(AsyncModel):
    colour = models.CharField(max_length=20)
    volume = models.OneToOneField(
        RelVolume, on_delete=models.CASCADE, related_name="cover"
    )


class RelTag(AsyncModel):
    name = models.CharField(max_length=50, unique=True)

    class Meta:
        ordering = ["name"]


class RelArticle(AsyncModel):
    """An auto-created many-to-many (``article.tags`` / ``tag.articles``)."""

    title = models.CharField(max_length=50, unique=True)
    tags = models.ManyToManyField(RelTag, related_name="articles")

    class Meta:
        ordering = ["title"]


class RelPerson(AsyncModel):
    """A symmetrical many-to-many to self (``friends``)."""

    name = models.CharField(max_length=50, unique=True)
    friends = models.ManyToManyField("self")

    class Meta:
        ordering = ["name"]


class RelClub(AsyncModel):
    """A many-to-many with a custom ``through`` model."""

    name = models.CharField(max_length=50, unique=True)
    members = models.ManyToManyField(
        RelPerson, through="RelMembership", related_name="clubs"
    )

    class Meta:
        ordering = ["name"]


class RelMembership(AsyncModel):
    person = models.ForeignKey(RelPerson, on_delete=models.CASCADE)
    club = models.ForeignKey(RelClub, on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="member")

    class Meta:
        ordering = ["id"]


class RelNote(AsyncModel):
    """A generic foreign key (and ``RelShelf.notes``, its GenericRelation)."""

    text = models.CharField(max_length=50)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    content_object = GenericForeignKey("content_type", "object_id")
