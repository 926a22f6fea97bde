"""The site's one app: the ``Item`` model."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import request_finished, request_started

#: Django's request signals, counted (the end-to-end tests read them).
signal_counts = {"request_started": 0, "request_finished": 0}


def _count(signal_name: str) -> Any:
    def receiver(**kwargs: Any) -> None:
        signal_counts[signal_name] += 1

    return receiver


_receivers = {name: _count(name) for name in signal_counts}


class SiteConfig(AppConfig):
    name = "benchmarks.http.site"
    label = "async_db_site"
    verbose_name = "async-db example site"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        request_started.connect(_receivers["request_started"])
        request_finished.connect(_receivers["request_finished"])
