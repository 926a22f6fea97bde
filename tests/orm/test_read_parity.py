"""Native reads equal the sync ORM's: models and values shapes (parity harness)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.orm_parity import normal, parity
from tests.ormapp.models import Author, Book

pytestmark = pytest.mark.usefixtures("orm")


async def test_models_all_field_types() -> None:
    result = await parity(lambda: Author.objects.order_by("name"))
    assert [a.name for a in result] == ["Ann", "Bob", "Cid", "Dee"]
    ann = result[0]
    assert ann._state.db == "default" and ann._state.adding is False
    assert ann.data == {"k": 1, "nested": {"a": [1, 2]}}
    assert ann.created.tzinfo is not None


async def test_filter_exclude_order() -> None:
    await parity(
        lambda: (
            Book.objects.filter(pages__gte=100).exclude(title="B1").order_by("-pages")
        )
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: Author.objects.values("name", "age", "score").order_by("name"),
        lambda: Author.objects.values().order_by("name"),
        lambda: Author.objects.values_list("name", "uid", "duration", "tags").order_by(
            "name"
        ),
        lambda: Author.objects.values_list("name", flat=True).order_by("-name"),
        lambda: Author.objects.values_list("name", "data", named=True).order_by("name"),
        lambda: Book.objects.values("author__name", "author__country__name").order_by(
            "title"
        ),
    ],
    ids=["values", "values-all", "values_list", "flat", "named", "values-joins"],
)
async def test_values_shapes(make: Any) -> None:
    result = await parity(make)
    assert result


async def test_select_related_nested_and_nullable() -> None:
    result = await parity(
        lambda: Book.objects.select_related("author__country", "editor").order_by(
            "title"
        )
    )
    a2 = next(b for b in result if b.title == "A2")
    assert a2.editor is None  # nullable, cached as None: no query
    assert a2.author.country.name == "France"


async def test_sync_evaluation_stays_django(observer: Any) -> None:
    from async_db.models import AsyncQuerySet

    qs = Book.objects.filter(pages__gt=0)
    assert isinstance(qs, AsyncQuerySet)
    assert isinstance(qs.order_by("title").values("title"), AsyncQuerySet)
    assert normal(await parity(lambda: qs.all())) is not None
