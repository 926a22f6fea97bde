"""ORM tests: the fixtures of tests/orm_fixtures.py.

Imported rather than listed in ``pytest_plugins``: pytest only accepts
``pytest_plugins`` in the root conftest.
"""

from tests.orm_fixtures import orm, orm_tables

__all__ = ["orm", "orm_tables"]
