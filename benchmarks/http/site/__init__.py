"""A small Django project on async-db, served over real HTTP.

Importable as ``benchmarks.http.site``; it is both the project (settings, URLs,
ASGI application) and its one app (label ``async_db_site``, model
:class:`~benchmarks.http.site.models.Item`). It is shared by the HTTP benchmark
(``python -m benchmarks.http``) and by end-to-end tests that drive it through
uvicorn, so nothing in it is benchmark-specific: every setting comes from the
environment (see :mod:`benchmarks.http.site.settings`).

Run it by hand::

    ASYNC_DB_SITE_DSN="host=127.0.0.1 dbname=test user=postgres" \\
        python -m uvicorn benchmarks.http.site.asgi:application --port 8000

after creating its table (:mod:`benchmarks.http.site.schema`).

Endpoints (``<pk>`` is an item id; every response is small JSON):

========================================  ======  ==============================
path                                      method  does
========================================  ======  ==============================
``health/``                               GET     no database: ``{"status": "ok"}``
``whoami/``                               GET     ``{"pid": <worker process>,
                                                  "backend_pid": <server backend>}``
``items/<pk>/async-db/``                  GET     point lookup, async-db cursor
``items/<pk>/native/``                    GET     point lookup, ``Item.objects.aget``
                                                  (async-db's native ORM)
``items/<pk>/orm/``                       GET     point lookup, Django's own
                                                  ``Item.django_objects.aget``
``items/<pk>/bump/async-db/``             POST    ``value += 1`` and read back in
                                                  ``async_atomic`` (SQL)
``items/<pk>/bump/native/``               POST    the same with ``aupdate`` and
                                                  ``aget`` in ``async_atomic``
``items/<pk>/bump/orm/``                  POST    the same in ``transaction.atomic``
                                                  via ``sync_to_async``
========================================  ======  ==============================

An unknown ``<pk>`` is a 404 with ``{"error": "not found"}``.
"""
