"""Models of the native ORM tests, part 2 (requestpath)."""

from __future__ import annotations

from django.db import models  # noqa: F401

#: The models this module defines (models.py imports them all).
__all__: list[str] = []
