"""Settings of the auth site, read from the environment.

==================================  ==========================================
variable                            meaning (default)
==================================  ==========================================
``ASYNC_DB_AUTH_SITE_DSN``          libpq DSN of the database (required)
``ASYNC_DB_AUTH_SITE_SCHEMA``       ``search_path`` of every connection: the
                                    run's own schema (``public``)
``ASYNC_DB_AUTH_SITE_NATIVE``       ``1``: async-db's opt-in, session engine
                                    and middleware; ``0``: Django's (``1``)
``ASYNC_DB_AUTH_SITE_APP_NAME``     ``application_name`` (``async-db-auth``)
``ASYNC_DB_AUTH_SITE_POOL_SIZE``    pool ``min_size`` = ``max_size``; ``0``:
                                    no pool (``20``)
==================================  ==========================================
"""

from __future__ import annotations

import os
import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from async_db._embedded import settings_dict_from_dsn

PREFIX = "ASYNC_DB_AUTH_SITE_"


def env(name: str, default: str) -> str:
    return os.environ.get(PREFIX + name) or default


def database_entry() -> dict[str, Any]:
    dsn = env("DSN", "")
    if not dsn:
        raise ImproperlyConfigured(f"Set ${PREFIX}DSN to the DSN of the database.")
    schema = env("SCHEMA", "public")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise ImproperlyConfigured(f"${PREFIX}SCHEMA must be an identifier: {schema!r}")
    options: dict[str, Any] = {
        "application_name": env("APP_NAME", "async-db-auth"),
        "options": f"-c search_path={schema}",
    }
    pool_size = int(env("POOL_SIZE", "20"))
    if pool_size:
        options["pool"] = {"min_size": pool_size, "max_size": pool_size, "timeout": 30}
    entry = settings_dict_from_dsn(dsn, **options)
    entry["CONN_MAX_AGE"] = 0
    return entry


NATIVE = env("NATIVE", "1") == "1"

DEBUG = False
# A loopback benchmark: the key protects nothing.
SECRET_KEY = "async-db-auth-site-insecure-key-for-loopback-use-only"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False
ROOT_URLCONF = "benchmarks.http.auth_site.urls"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "async_db",
    "benchmarks.http.auth_site",
]
# The global opt-in: Django's async ORM methods of every model run natively.
ASYNC_DB = {"NATIVE_ORM": NATIVE}
SESSION_ENGINE = (
    "async_db.contrib.sessions.backends.db"
    if NATIVE
    else "django.contrib.sessions.backends.db"
)
MIDDLEWARE = [
    "async_db.contrib.sessions.middleware.SessionMiddleware"
    if NATIVE
    else "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DATABASES = {"default": database_entry()}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR"},
        "async_db": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
