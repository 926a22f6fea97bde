"""The rest of the read shapes and methods, natively and with the sync ORM."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

import pytest
from django.db.models import (
    Avg,
    Count,
    Exists,
    F,
    Max,
    OuterRef,
    Subquery,
    Sum,
    Window,
)
from django.db.models.functions import Lower, RowNumber, TruncDate

from tests.orm_parity import method_parity, parity
from tests.ormapp.models import Author, Book, Country

pytestmark = pytest.mark.usefixtures("orm")

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Author.objects.annotate(n=Count("book")).order_by("name"),
        lambda: (
            Author.objects.annotate(pages=Sum("book__pages"), avg=Avg("book__price"))
            .filter(pages__gt=100)
            .order_by("-pages")
        ),
        lambda: Author.objects.annotate(
            last_title=Subquery(
                Book.objects.filter(author=OuterRef("pk"))
                .order_by("-published")
                .values("title")[:1]
            ),
            edits=Exists(Book.objects.filter(editor=OuterRef("pk"))),
        ).order_by("name"),
        lambda: (
            Book.objects.annotate(double=F("pages") * 2)
            .values("title", "double")
            .order_by("title")
        ),
        lambda: Author.objects.only("name").order_by("name"),
        lambda: Author.objects.defer("data", "tags").order_by("name"),
        lambda: (
            Book.objects.select_related("author")
            .only("title", "author__name")
            .order_by("title")
        ),
        lambda: Author.objects.values("age").distinct().order_by("age"),
        lambda: Book.objects.order_by("author_id", "title").distinct("author_id"),
        lambda: (
            Author.objects.filter(age=34)
            .union(Author.objects.filter(name="Bob"))
            .order_by("name")
        ),
        lambda: (
            Author.objects.values_list("name", flat=True)
            .intersection(
                Author.objects.filter(age__isnull=False).values_list("name", flat=True)
            )
            .order_by("name")
        ),
        lambda: Author.objects.difference(Author.objects.filter(age=34)).order_by(
            "name"
        ),
        lambda: Book.objects.order_by("title")[1:3],
        lambda: Book.objects.order_by("-pages")[:2].values("title"),
        lambda: Author.objects.none(),
        lambda: Author.objects.filter(pk__in=[]),
        lambda: Author.objects.none().values("name"),
        lambda: Book.objects.dates("published", "month"),
        lambda: Book.objects.dates("published", "year", order="DESC"),
        lambda: Book.objects.datetimes("published", "hour"),
        lambda: Author.objects.filter(data__k=1),
        lambda: Author.objects.filter(tags__contains=["a"]).values_list(
            "tags", flat=True
        ),
        lambda: Author.objects.filter(duration__gt=datetime.timedelta(0)).values(
            "duration"
        ),
        lambda: Book.objects.long().order_by("title"),
        lambda: Country.objects.all(),
        lambda: Book.objects.datetimes("published", "day", tzinfo=PARIS),
        lambda: Author.objects.values(lower=Lower("name")).order_by("lower"),
        lambda: Author.objects.alias(n=Count("book")).filter(n__gte=2),
        lambda: Book.objects.annotate(
            rank=Window(RowNumber(), partition_by="author", order_by="-pages")
        ).order_by("author_id", "rank"),
        lambda: Book.objects.annotate(day=TruncDate("published")).values(
            "title", "day"
        ),
        lambda: Author.objects.extra(select={"two": "2"}).values("name", "two"),
        lambda: Book.objects.filter(author__in=Author.objects.filter(age=34)),
    ],
    ids=[
        "annotate-count",
        "annotate-sum-avg-filter",
        "subquery-exists",
        "annotate-expression-values",
        "only",
        "defer",
        "select_related-only",
        "distinct",
        "distinct-on",
        "union",
        "intersection-values",
        "difference",
        "slice",
        "slice-values",
        "none",
        "pk-in-empty",
        "none-values",
        "dates-month",
        "dates-year-desc",
        "datetimes-hour",
        "json-lookup",
        "array-contains",
        "duration",
        "custom-queryset-method",
        "meta-ordering",
        "datetimes-tzinfo",
        "values-expression",
        "alias-filter",
        "window",
        "truncdate",
        "extra-select",
        "subquery-in",
    ],
)
@pytest.mark.parametrize("in_atomic", [False, True], ids=["autocommit", "atomic"])
async def test_shape(make: Any, in_atomic: bool) -> None:
    await parity(make, in_atomic=in_atomic)


@pytest.mark.parametrize(
    ("make", "method", "args", "kwargs"),
    [
        (lambda: Author.objects.all(), "get", (), {"name": "Ann"}),
        (lambda: Author.objects.all(), "get", (), {"name": "Nobody"}),
        (lambda: Author.objects.all(), "get", (), {"age": 34}),
        (lambda: Author.objects.all(), "get", (), {}),
        (lambda: Author.objects.filter(name="Bob"), "get", (), {}),
        (lambda: Author.objects.order_by("name"), "first", (), {}),
        (lambda: Author.objects.all(), "first", (), {}),
        (lambda: Author.objects.order_by("name"), "last", (), {}),
        (lambda: Author.objects.filter(pk__in=[]), "first", (), {}),
        (lambda: Author.objects.all(), "earliest", ("born",), {}),
        (lambda: Author.objects.all(), "latest", (), {}),
        (lambda: Author.objects.filter(name="Zed"), "latest", (), {}),
        (lambda: Author.objects.all(), "count", (), {}),
        (lambda: Author.objects.filter(age=34), "count", (), {}),
        (lambda: Author.objects.none(), "count", (), {}),
        (lambda: Author.objects.values("age").distinct(), "count", (), {}),
        (lambda: Book.objects.order_by("title")[:2], "count", (), {}),
        (lambda: Author.objects.filter(age=34), "exists", (), {}),
        (lambda: Author.objects.filter(age=99), "exists", (), {}),
        (
            lambda: Book.objects.all(),
            "aggregate",
            (Sum("pages"),),
            {"top": Max("price")},
        ),
        (
            lambda: Book.objects.filter(pk__in=[]),
            "aggregate",
            (),
            {"n": Count("id"), "s": Sum("pages")},
        ),
        (
            lambda: Author.objects.annotate(n=Count("book")),
            "aggregate",
            (),
            {"m": Max("n")},
        ),
        (lambda: Author.objects.all(), "in_bulk", (), {}),
        (
            lambda: Author.objects.all(),
            "in_bulk",
            (["Ann", "Cid"],),
            {"field_name": "name"},
        ),
        (lambda: Author.objects.all(), "in_bulk", ([],), {}),
        (lambda: Author.objects.values("name"), "in_bulk", (), {}),
    ],
)
async def test_method(make: Any, method: str, args: Any, kwargs: Any) -> None:
    await method_parity(make, method, *args, **kwargs)


async def test_errors_are_djangos() -> None:
    from async_db.models import native

    with pytest.raises(
        Author.DoesNotExist, match=r"^Author matching query does not exist\.$"
    ):
        await Author.objects.aget(name="Nobody")
    with pytest.raises(
        Author.MultipleObjectsReturned,
        match=r"^get\(\) returned more than one Author -- it returned 2!$",
    ):
        await native(Author).aget(age=34)


async def test_contains() -> None:
    ann = await Author.objects.aget(name="Ann")
    assert await Author.objects.filter(age=34).acontains(ann)
    assert not await Author.objects.filter(age=51).acontains(ann)
    book = await Book.objects.afirst()
    assert not await Author.objects.acontains(book)


@pytest.mark.parametrize("options", [{}, {"format": "json"}, {"verbose": True}])
async def test_explain(options: dict[str, Any]) -> None:
    plan = await method_parity(
        lambda: Author.objects.filter(age=34), "explain", **options
    )
    assert "Scan" in plan


async def test_native_accepts_queryset_manager_model() -> None:
    from django.contrib.auth.models import User

    from async_db.models import AsyncQuerySet, native

    for obj in (User, User.objects, User.objects.filter(is_active=True)):
        qs = native(obj)
        assert isinstance(qs, AsyncQuerySet)
        assert await qs.acount() == 0
    with pytest.raises(TypeError, match="native\\(\\) takes a QuerySet"):
        native(42)


async def test_custom_querysets_keep_their_methods() -> None:
    from async_db.models import AsyncQuerySet
    from tests.ormapp.models import Gadget

    assert isinstance(Book.objects.long(), AsyncQuerySet)
    assert [b.title async for b in Book.objects.long().order_by("title")] == [
        "A1",
        "B1",
        "D1",
    ]
    assert await Gadget.objects.named("x").acount() == 0


async def test_prefetch_related_is_native() -> None:
    """Issue 12: evaluated natively (tests/orm/test_prefetch.py has parity)."""
    authors = [a async for a in Author.objects.prefetch_related("book_set")]
    assert all("book_set" in a._prefetched_objects_cache for a in authors)


async def test_reverse_related_manager_reads_are_native() -> None:
    from async_db import async_atomic, async_connections
    from async_db.models import AsyncQuerySet

    ann = await Author.objects.aget(name="Ann")
    assert isinstance(ann.book_set.all(), AsyncQuerySet)
    books = await parity(lambda: ann.book_set.order_by("title"))
    assert [b.title for b in books] == ["A1", "A2"]
    assert books[0].author is ann  # known related object, as Django sets it
    assert await ann.book_set.filter(pages__gt=200).acount() == 1
    # Issue 12: related managers' writes are native (tests/orm/test_relations.py).
    async with async_atomic():
        book = await ann.book_set.acreate(title="never")
        assert book.author_id == ann.pk
        async_connections["default"].set_rollback(True)
    assert await Book.objects.filter(title="never").acount() == 0
