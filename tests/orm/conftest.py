"""ORM tests: their fixtures (``orm``, ``orm_tables``) live in
tests/orm_fixtures.py, a plugin of the root conftest, so that every module
using them shares one session fixture."""
