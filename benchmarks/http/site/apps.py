"""The site's one app: the ``Item`` model."""

from __future__ import annotations

from django.apps import AppConfig


class SiteConfig(AppConfig):
    name = "benchmarks.http.site"
    label = "async_db_site"
    verbose_name = "async-db example site"
    default_auto_field = "django.db.models.AutoField"
