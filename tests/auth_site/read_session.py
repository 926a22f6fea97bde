"""``python -m tests.auth_site.read_session KEY``: the session ``KEY`` as
Django's own sync ``db`` engine reads it (JSON on stdout)."""

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.auth_site.settings")

import django

django.setup()

from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.db import connections  # noqa: E402

store = SessionStore(sys.argv[1])
print(json.dumps({"exists": store.exists(sys.argv[1]), "data": dict(store.items())}))
connections.close_all()
