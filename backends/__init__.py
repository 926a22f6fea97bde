"""Async database backends, mirroring ``django.db.backends``.

``backends.base`` holds the abstract async wrapper and cursor;
``backends.postgresql`` implements them on psycopg 3's ``AsyncConnection``.
Django's ``ENGINE`` names map to these modules in ``async_db``.
"""
