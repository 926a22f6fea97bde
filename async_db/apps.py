"""``"async_db"`` in ``INSTALLED_APPS``: the global opt-in, read when the app
registry is ready.

``ASYNC_DB = {"NATIVE_ORM": True}`` makes every model's Django async methods
native (:mod:`async_db._native_orm` says exactly what it swaps). Off by
default: without the setting, installing the app patches nothing of Django.
async-db itself needs no ``INSTALLED_APPS`` entry (``async_db.models`` and
the session engine work without one).
"""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["AsyncDbConfig"]


class AsyncDbConfig(AppConfig):
    name = "async_db"
    label = "async_db"
    verbose_name = "async-db"

    def ready(self) -> None:
        from async_db import _native_orm

        if _native_orm.enabled_in_settings():
            _native_orm.patch()
