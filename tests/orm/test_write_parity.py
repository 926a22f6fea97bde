"""A native create stores and returns what the sync ORM's create does."""

from __future__ import annotations

import decimal
from typing import Any

import pytest

from tests.orm_parity import normal, run_sync
from tests.ormapp.models import Author

pytestmark = pytest.mark.usefixtures("orm")


async def test_parity_of_a_native_create_with_the_sync_orm(observer: Any) -> None:
    try:
        native_obj = await Author.objects.acreate(
            name="Native", score=decimal.Decimal("1.10"), data={"a": [1]}
        )
        sync_obj = await run_sync(
            lambda: Author.objects.create(
                name="Sync", score=decimal.Decimal("1.10"), data={"a": [1]}
            )
        )
        for field in ("score", "data", "tags", "age", "created"):
            assert normal(getattr(native_obj, field)) == normal(
                getattr(sync_obj, field)
            )
        assert type(native_obj.pk) is type(sync_obj.pk)
        assert native_obj._state.adding is sync_obj._state.adding is False
        # Each side reads the other's row back identically.
        native_read = await Author.objects.aget(name="Sync")
        sync_read = await run_sync(lambda: Author.objects.get(name="Native"))
        native_read.name = sync_read.name = "x"
        native_read.pk = sync_read.pk = native_read.uid = sync_read.uid = None
        assert normal(native_read) == normal(sync_read)
    finally:
        observer.execute("DELETE FROM ormapp_author WHERE name IN ('Native', 'Sync')")
