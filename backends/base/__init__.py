"""The abstract async connection wrapper and PEP 249 async cursor."""

from backends.base.base import BaseAsyncDatabaseWrapper, django_setting
from backends.base.cursor import AsyncCursorDebugWrapper, AsyncCursorWrapper

__all__ = [
    "AsyncCursorDebugWrapper",
    "AsyncCursorWrapper",
    "BaseAsyncDatabaseWrapper",
    "django_setting",
]
