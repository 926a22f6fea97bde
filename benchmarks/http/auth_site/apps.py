from __future__ import annotations

from django.apps import AppConfig


class AuthSiteConfig(AppConfig):
    name = "benchmarks.http.auth_site"
    label = "bench_auth_site"
    default_auto_field = "django.db.models.AutoField"
