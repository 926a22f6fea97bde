"""Settings of the auth site; the database comes from ``$AUTH_SITE_DSN``."""

from __future__ import annotations

import os

from async_db._embedded import settings_dict_from_dsn

SECRET_KEY = "async-db-auth-site-insecure-key-for-loopback-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.auth_site.urls"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "async_db",
]
#: ``$AUTH_SITE_NATIVE=0``: Django's own async path (the tests' control).
NATIVE = os.environ.get("AUTH_SITE_NATIVE", "1") == "1"

# The global opt-in: Django's async ORM methods of every model are native.
ASYNC_DB = {"NATIVE_ORM": NATIVE}
SESSION_ENGINE = (
    "async_db.contrib.sessions.backends.db"
    if NATIVE
    else "django.contrib.sessions.backends.db"
)
MIDDLEWARE = [
    # Outermost: records the database work of each request (see the module).
    "tests.auth_site.middleware.RecordDatabaseWork",
    # In place of django.contrib.sessions.middleware.SessionMiddleware.
    "async_db.contrib.sessions.middleware.SessionMiddleware"
    if NATIVE
    else "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
# A fast hasher: the tests log in often on a shared machine.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DATABASES = {
    "default": settings_dict_from_dsn(
        os.environ["AUTH_SITE_DSN"],
        application_name=os.environ.get("AUTH_SITE_APP_NAME", "async-db-auth-site"),
    )
}
