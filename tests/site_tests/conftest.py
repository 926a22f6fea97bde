"""pytest-django fixtures of the site's suite.

The suite runs in a pytest of its own (``pytest -c tests/site_tests/pytest.ini``,
see ``tests/test_site_suite.py``), with the site's settings; the main suite of
async-db, configured for its own server, doesn't collect it.
"""

import os

import pytest

if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.site_tests.settings":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def items(db):
    """Three items, created with the sync ORM inside pytest-django's per-test
    transaction: the async views see them (one server session)."""
    from benchmarks.http.site.models import Item

    return [Item.objects.create(name=f"item {i}", value=i) for i in range(1, 4)]
