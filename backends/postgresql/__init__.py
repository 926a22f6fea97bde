"""PostgreSQL async backend on psycopg 3 (``psycopg.AsyncConnection``)."""
