"""``python -m tests.auth_site.setup_db``: migrate the site's database and
create its user (sync Django, before the site starts)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.auth_site.settings")

import django

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402

call_command("migrate", verbosity=0)
User.objects.create_user("ann", password="ann-pw")
connections.close_all()
