"""Sphinx configuration for the async-db docs (built with -W in CI)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

# autodoc imports the modules: give Django minimal settings.
if not settings.configured:
    settings.configure(INSTALLED_APPS=[], DATABASES={})
    django.setup()

project = "async-db"
author = "async-db developers"
# sphinx.ext.doctest: its testsetup / testcode :hide: / testcleanup directives
# render nothing; tests/test_docs_examples.py runs them with the examples
# (they use top-level await: not meant for `sphinx-build -b doctest`).
extensions = ["sphinx.ext.autodoc", "sphinx.ext.doctest"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
