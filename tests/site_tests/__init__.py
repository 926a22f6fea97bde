"""The example site's own test suite (``benchmarks/http/site``), written the
way its users would write it: Django's ``TestCase`` for some views
(``test_django_views.py``, run by Django's runner and by pytest-django),
pytest-django for others (``test_pytest_views.py``), both on the native ORM,
in rollback mode. ``tests/test_site_suite.py`` runs it in subprocesses with
its own settings (``settings.py``) and checks that the database is left as it
was found."""
