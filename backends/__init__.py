"""Async database backends, mirroring ``django.db.backends``.

Installed and imported as ``async_db.backends`` (the folder sits at the
repository root; ``async_db/backends`` links to it for in-place use):
``async_db.backends.base`` holds the abstract async wrapper and cursor;
``async_db.backends.postgresql`` implements them on psycopg 3's
``AsyncConnection``. Django's ``ENGINE`` names map to these modules in
``async_db._engine``. Layers are one-way: nothing here imports the handler or
its storage; a wrapper reports transaction state to the handler that created it.
"""
