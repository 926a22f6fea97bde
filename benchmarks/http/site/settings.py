"""Settings of the example site, all read from the environment.

=================================  ===========================================
variable                           meaning (default)
=================================  ===========================================
``ASYNC_DB_SITE_DSN``              libpq DSN or URI of the database (required;
                                   falls back to ``$ASYNC_DB_DSN``)
``ASYNC_DB_SITE_APP_NAME``         ``application_name`` of its connections, to
                                   find them in ``pg_stat_activity``
                                   (``async-db-site``)
``ASYNC_DB_SITE_POOL_SIZE``        pool ``min_size`` = ``max_size`` of the
                                   ``default`` alias; ``0``: no pool, one
                                   connection per request (``20``)
``ASYNC_DB_SITE_POOL_TIMEOUT``     seconds to wait for a pooled connection
                                   (``30``)
``ASYNC_DB_SITE_POOL_RESET``       ``1``: async-db's pool resets the session
                                   (``RESET ALL``, time zone) of every returned
                                   connection; ``0``: ``"reset": None`` (``1``)
``ASYNC_DB_SITE_TRANSACTION_POOLING``
                                   ``1``: the DSN points at a transaction
                                   pooler (PgBouncer in transaction mode):
                                   ``OPTIONS["transaction_pooling"]`` (``0``)
``ASYNC_DB_SITE_ITEM_TABLE``       table of the ``Item`` model
                                   (``async_db_site_item``)
``ASYNC_DB_SITE_CHECK_DATABASE``   ``1``: the ASGI startup connects once, so a
                                   bad DSN fails the start and the pool is open
                                   before the first request (``1``)
``ASYNC_DB_SITE_DEBUG``            Django's ``DEBUG`` (``0``)
``ASYNC_DB_SITE_MIDDLEWARE``       ``1``: Django's usual middleware (``0``)
``ASYNC_DB_SITE_ALLOWED_HOSTS``    comma-separated ``ALLOWED_HOSTS``
                                   (``127.0.0.1,localhost,[::1]``: loopback)
=================================  ===========================================

The pool options apply to the alias as a whole, so the ORM (Django's own
``psycopg_pool.ConnectionPool``, one per process) and async-db (an
``AsyncConnectionPool`` per event loop) each get a pool of that size.
"""

from __future__ import annotations

import os
import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from async_db._embedded import DSN_ENV, settings_dict_from_dsn

PREFIX = "ASYNC_DB_SITE_"


def env(name: str, default: str) -> str:
    """``$ASYNC_DB_SITE_<name>``, or ``default`` when unset or empty."""
    return os.environ.get(PREFIX + name) or default


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ImproperlyConfigured(
            f"${PREFIX}{name} must be an integer >= {minimum}, not {raw!r}."
        )
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = env(name, "1" if default else "0").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"${PREFIX}{name} must be 0 or 1, not {raw!r}.")


def database_entry() -> dict[str, Any]:
    """``DATABASES["default"]`` from the environment."""
    dsn = env("DSN", os.environ.get(DSN_ENV, ""))
    if not dsn:
        raise ImproperlyConfigured(
            f"Set ${PREFIX}DSN (or ${DSN_ENV}) to the DSN of the site's database."
        )
    options: dict[str, Any] = {"application_name": env("APP_NAME", "async-db-site")}
    pool_size = env_int("POOL_SIZE", 20)
    if pool_size:
        options["pool"] = {
            "min_size": pool_size,
            "max_size": pool_size,
            "timeout": float(env_int("POOL_TIMEOUT", 30, minimum=1)),
        }
        if not env_bool("POOL_RESET", True):
            # Django's own pool has no reset: this only changes async-db's.
            options["pool"]["reset"] = None
    if env_bool("TRANSACTION_POOLING", False):
        options["transaction_pooling"] = True
    entry = settings_dict_from_dsn(dsn, **options)
    # Pools require non-persistent connections (as in Django).
    entry["CONN_MAX_AGE"] = 0
    return entry


def item_table() -> str:
    name = env("ITEM_TABLE", "async_db_site_item")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ImproperlyConfigured(
            f"${PREFIX}ITEM_TABLE must be a lowercase SQL identifier, not {name!r}."
        )
    return name


DEBUG = env_bool("DEBUG", False)
# A loopback example: the key protects nothing.
SECRET_KEY = env("SECRET_KEY", "async-db-site-insecure-key-for-loopback-use-only")
ALLOWED_HOSTS = env("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

INSTALLED_APPS = ["benchmarks.http.site"]
# No middleware by default: the views are the whole request path.
# ``$ASYNC_DB_SITE_MIDDLEWARE=1``: Django's usual stack (end-to-end tests).
MIDDLEWARE: list[str] = (
    [
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    ]
    if env_bool("MIDDLEWARE", False)
    else []
)
ROOT_URLCONF = "benchmarks.http.site.urls"
ASGI_APPLICATION = "benchmarks.http.site.asgi.application"

DATABASES = {"default": database_entry()}
ASYNC_DB_SITE_ITEM_TABLE = item_table()
ASYNC_DB_SITE_CHECK_DATABASE = env_bool("CHECK_DATABASE", True)

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False

# Errors reach the server's stderr whatever DEBUG is (Django's default console
# handler only logs when DEBUG is on).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR"},
        "async_db": {"handlers": ["stderr"], "level": "WARNING"},
        "async_db_site": {"handlers": ["stderr"], "level": "INFO"},
    },
}
