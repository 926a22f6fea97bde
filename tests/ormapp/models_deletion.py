"""Models of the native ORM tests, part 2 (deletion): every ``on_delete``,
generic relations, many-to-many through rows (auto-created and explicit) and
multi-table inheritance, around one referenced model, :class:`DelR`.

Every row of these tables is created with an explicit primary key by the
tests, so that two runs of the same scenario (native, then sync) can be
compared table by table.
"""

from __future__ import annotations

from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models

from async_db.models import AsyncModel

#: The primary key of the :class:`DelR` row ``SET_DEFAULT``/``SET(...)`` use.
SENTINEL_PK = 1_000_000


def sentinel_pk() -> int:
    """``SET(callable)``'s callable: no query."""
    return SENTINEL_PK


class DelOwner(AsyncModel):
    """Owns R and A rows: deleting it cascades to both (RESTRICT is lifted)."""

    name = models.CharField(max_length=30)


class DelTag(AsyncModel):
    """A generic foreign key to anything (DelR's ``tags``)."""

    label = models.CharField(max_length=30)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    content_object = GenericForeignKey("content_type", "object_id")


class DelR(AsyncModel):
    """The referenced model: every on_delete of :class:`DelA` points here."""

    name = models.CharField(max_length=30)
    owner = models.ForeignKey(
        DelOwner, null=True, on_delete=models.CASCADE, related_name="rs"
    )
    tags = GenericRelation(DelTag)
    owners = models.ManyToManyField(DelOwner, related_name="m2m_rs")
    members = models.ManyToManyField(
        DelOwner, through="DelMembership", related_name="member_rs"
    )


class DelMembership(AsyncModel):
    """An explicit many-to-many through model."""

    r = models.ForeignKey(DelR, on_delete=models.CASCADE)
    owner = models.ForeignKey(DelOwner, on_delete=models.CASCADE)
    role = models.CharField(max_length=30, default="member")


class DelA(AsyncModel):
    """One foreign key to :class:`DelR` per ``on_delete``."""

    name = models.CharField(max_length=30)
    owner = models.ForeignKey(
        DelOwner, null=True, on_delete=models.CASCADE, related_name="as_"
    )
    cascade = models.ForeignKey(
        DelR, null=True, on_delete=models.CASCADE, related_name="a_cascade"
    )
    protect = models.ForeignKey(
        DelR, null=True, on_delete=models.PROTECT, related_name="a_protect"
    )
    restrict = models.ForeignKey(
        DelR, null=True, on_delete=models.RESTRICT, related_name="a_restrict"
    )
    set_null = models.ForeignKey(
        DelR, null=True, on_delete=models.SET_NULL, related_name="a_set_null"
    )
    set_default = models.ForeignKey(
        DelR,
        null=True,
        default=SENTINEL_PK,
        on_delete=models.SET_DEFAULT,
        related_name="a_set_default",
    )
    set_value = models.ForeignKey(
        DelR, null=True, on_delete=models.SET(SENTINEL_PK), related_name="a_set_value"
    )
    set_callable = models.ForeignKey(
        DelR, null=True, on_delete=models.SET(sentinel_pk), related_name="a_set_call"
    )
    do_nothing = models.ForeignKey(
        DelR,
        null=True,
        db_constraint=False,
        on_delete=models.DO_NOTHING,
        related_name="a_do_nothing",
    )


class DelLeaf(AsyncModel):
    """Restricted by :class:`DelR` and owned by :class:`DelOwner`, with nothing
    pointing at it: without receivers its owner's cascade is a fast delete
    (Django then lifts the restriction with a query on that queryset)."""

    owner = models.ForeignKey(DelOwner, null=True, on_delete=models.CASCADE)
    r = models.ForeignKey(DelR, null=True, on_delete=models.RESTRICT)


class DelB(AsyncModel):
    """Cascades from :class:`DelA`: a second level of the cascade."""

    a = models.ForeignKey(DelA, on_delete=models.CASCADE)


class DelPlace(AsyncModel):
    """A multi-table inheritance parent."""

    name = models.CharField(max_length=30)
    r = models.ForeignKey(DelR, null=True, on_delete=models.CASCADE)


class DelRestaurant(DelPlace):
    """A multi-table inheritance child, cascaded to from :class:`DelR` by its
    own foreign key too (its parent's fields are then deferred)."""

    seats = models.IntegerField(default=0)
    r2 = models.ForeignKey(
        DelR, null=True, on_delete=models.CASCADE, related_name="restaurants"
    )


class DelChef(AsyncModel):
    """Cascades from the child of the multi-table inheritance."""

    restaurant = models.ForeignKey(DelRestaurant, on_delete=models.CASCADE)


def sentinel_queries() -> int:
    """A ``SET(callable)`` whose callable queries, as Django's docs'
    ``get_sentinel_user``: not native."""
    return DelR.objects.get_or_create(pk=SENTINEL_PK, name="sentinel")[0].pk


class DelQuerying(AsyncModel):
    """An on_delete handler that runs a query."""

    r = models.ForeignKey(DelR, null=True, on_delete=models.SET(sentinel_queries))


#: The models this module defines (models.py imports them all).
__all__: list[str] = [
    "SENTINEL_PK",
    "DelA",
    "DelB",
    "DelChef",
    "DelLeaf",
    "DelMembership",
    "DelOwner",
    "DelPlace",
    "DelQuerying",
    "DelR",
    "DelRestaurant",
    "DelTag",
]
