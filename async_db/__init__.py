"""async-db: a native async database layer for Django on psycopg 3."""

from django.db import DEFAULT_DB_ALIAS

__all__ = ["DEFAULT_DB_ALIAS"]
