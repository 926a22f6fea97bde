"""The abstract async connection wrapper and PEP 249 async cursor."""

from async_db.backends.base.base import BaseAsyncDatabaseWrapper, django_setting
from async_db.backends.base.cursor import AsyncCursorDebugWrapper, AsyncCursorWrapper

__all__ = [
    "AsyncCursorDebugWrapper",
    "AsyncCursorWrapper",
    "BaseAsyncDatabaseWrapper",
    "django_setting",
]
