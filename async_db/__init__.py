"""async-db: a native async database layer for Django on psycopg 3.

``async_connections[alias]`` is the current asyncio task's connection for
``alias``: created lazily, never shared with another task, released when the
task ends. See ``docs/connections.rst`` for the full visibility contract.
"""

from django.db import DEFAULT_DB_ALIAS

from async_db import _interop
from async_db._handler import AsyncConnectionHandler
from async_db._scopes import aclose_old_connections, new_connections
from async_db.backends.base.pools import PoolTimeout
from async_db.transaction import async_atomic

#: The global handler, reading ``settings.DATABASES`` on first use.
async_connections = AsyncConnectionHandler()

# Warn about sync ORM queries inside an async transaction (see _interop).
_interop.install()

__all__ = [
    "DEFAULT_DB_ALIAS",
    "AsyncConnectionHandler",
    "PoolTimeout",
    "aclose_old_connections",
    "async_atomic",
    "async_connections",
    "new_connections",
]
