"""The site's settings, for its test suite: the site's own, read from the
environment (``$ASYNC_DB_SITE_DSN`` names the development database; Django's
runner and pytest-django create ``test_<NAME>`` from it), with the startup
check off (tests have no ASGI lifespan)."""

import os

os.environ.setdefault("ASYNC_DB_SITE_CHECK_DATABASE", "0")

from benchmarks.http.site.settings import *  # noqa: F403
