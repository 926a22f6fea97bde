"""Which async backend serves a ``DATABASES`` entry.

Django's ``ENGINE`` names map to our backend modules; an ``ASYNC_ENGINE`` key
names one explicitly. Anything else is ``ImproperlyConfigured``, naming the
engine, the alias and what is supported.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    import asyncio

    from async_db.backends.base.base import BaseAsyncDatabaseWrapper

#: Django ENGINE -> async backend module.
ASYNC_BACKENDS = {
    "django.db.backends.postgresql": "async_db.backends.postgresql",
}


def backend_name(alias: str, settings_dict: dict[str, Any]) -> str:
    """The dotted path of the async backend module for ``alias``."""
    explicit = settings_dict.get("ASYNC_ENGINE")
    if explicit:
        return str(explicit)
    engine = settings_dict.get("ENGINE") or ""
    try:
        return ASYNC_BACKENDS[engine]
    except KeyError:
        supported = ", ".join(f"'{name}'" for name in ASYNC_BACKENDS)
        raise ImproperlyConfigured(
            f"The database engine '{engine}' of alias '{alias}' has no async "
            f"backend. Supported engines: {supported}. Set 'ASYNC_ENGINE' in "
            f"DATABASES['{alias}'] to the dotted path of an async backend module "
            f"to use another."
        ) from None


def load_backend(
    alias: str, settings_dict: dict[str, Any]
) -> type[BaseAsyncDatabaseWrapper]:
    """Import the backend's ``base`` module and return its ``DatabaseWrapper``."""
    name = backend_name(alias, settings_dict)
    try:
        module = import_module(f"{name}.base")
        wrapper: type[BaseAsyncDatabaseWrapper] = module.DatabaseWrapper
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(
            f"'{name}' (alias '{alias}') isn't an available async database "
            f"backend: no module '{name}.base' defining DatabaseWrapper ({exc})."
        ) from exc
    return wrapper


def create_connection(
    alias: str,
    settings_dict: dict[str, Any],
    *,
    owner: asyncio.Task[Any] | None = None,
) -> BaseAsyncDatabaseWrapper:
    """Build an unconnected wrapper for ``alias`` (no I/O)."""
    return load_backend(alias, settings_dict)(settings_dict, alias, owner=owner)
