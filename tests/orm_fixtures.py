"""Fixtures of the native ORM tests: the ormapp tables and committed data.

The tables of ``tests.ormapp`` (and of ``contrib.auth``/``contenttypes`` when
no one created them) are created once per session with Django's schema
editor on the sync connection, and dropped at the end. The seed data is
committed, so the sync ORM (parity checks) and the native ORM see the same
rows. Every sync connection opened here is closed before the tests run (the
leak checks count backends).
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterator
from typing import Any

import pytest

SEED_TABLES = ("ormapp_book", "ormapp_author", "ormapp_country")


def _models() -> list[Any]:
    from django.apps import apps

    wanted = ("ormapp", "contenttypes", "auth")
    models = [m for label in wanted for m in apps.get_app_config(label).get_models()]
    # Models other pages register in the app (the docs' examples) are theirs.
    return [
        m
        for m in models
        if m._meta.app_label != "ormapp" or m.__module__.startswith("tests.ormapp.")
    ]


@pytest.fixture(scope="session")
def orm_tables() -> Iterator[None]:
    from django.db import connection, connections

    try:
        existing = set(connection.introspection.table_names())
        created = []
        with connection.schema_editor() as editor:
            for model in _models():
                if model._meta.db_table in existing:
                    if model._meta.app_label != "ormapp":
                        continue
                    editor.delete_model(model)  # left over by a crashed run
                editor.create_model(model)
                created.append(model)
        _seed()
    finally:
        connections.close_all()
    try:
        yield
    finally:
        try:
            with connection.schema_editor() as editor:
                for model in reversed(created):
                    editor.delete_model(model)
        finally:
            connections.close_all()


def _seed() -> None:
    from tests.ormapp.models import Author, Book, Country

    utc = datetime.UTC
    fr, no = Country.objects.bulk_create(
        [Country(name="France"), Country(name="Norway")]
    )
    authors = Author.objects.bulk_create(
        [
            Author(
                name="Ann",
                age=34,
                country=fr,
                data={"k": 1, "nested": {"a": [1, 2]}},
                score=decimal.Decimal("12.50"),
                duration=datetime.timedelta(hours=1, microseconds=5),
                tags=["a", "b"],
                created=datetime.datetime(2024, 1, 2, 3, 4, 5, 600, tzinfo=utc),
                born=datetime.date(1990, 5, 17),
            ),
            Author(
                name="Bob",
                age=51,
                country=no,
                data=[1, "two", None],
                score=decimal.Decimal("-3.25"),
                tags=[],
                created=datetime.datetime(2023, 6, 30, 23, 59, tzinfo=utc),
                born=datetime.date(1973, 1, 1),
            ),
            Author(name="Cid", age=None, country=None, data={}, tags=["x"]),
            Author(
                name="Dee",
                age=34,
                country=fr,
                data={"k": 2},
                score=decimal.Decimal("0.01"),
                created=datetime.datetime(2024, 1, 2, 9, 0, tzinfo=utc),
                born=datetime.date(1990, 12, 1),
            ),
        ]
    )
    ann, bob, cid, dee = authors
    published = datetime.datetime(2020, 2, 29, 12, 0, tzinfo=utc)
    Book.objects.bulk_create(
        [
            Book(
                title="A1",
                pages=320,
                price=decimal.Decimal("9.99"),
                author=ann,
                editor=bob,
                published=published,
            ),
            Book(
                title="A2",
                pages=120,
                price=decimal.Decimal("5.00"),
                author=ann,
                editor=None,
                published=published + datetime.timedelta(days=40),
            ),
            Book(
                title="B1",
                pages=500,
                price=decimal.Decimal("25.00"),
                author=bob,
                editor=ann,
                published=published + datetime.timedelta(days=400),
            ),
            Book(
                title="C1",
                pages=80,
                price=decimal.Decimal("1.50"),
                author=cid,
                editor=cid,
                published=None,
            ),
            Book(
                title="D1",
                pages=300,
                price=decimal.Decimal("14.00"),
                author=dee,
                editor=None,
                published=published + datetime.timedelta(hours=5),
            ),
        ]
    )


@pytest.fixture
def orm(orm_tables: None) -> None:
    """The ORM tables exist and hold the seed data."""
