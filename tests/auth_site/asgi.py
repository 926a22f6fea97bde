"""``python -m uvicorn tests.auth_site.asgi:application --lifespan off``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.auth_site.settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
