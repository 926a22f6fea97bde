"""The session + user + list site of the HTTP scenario (issue 12).

One view, ``/books/``, written the way a Django user writes it: it loads the
session and the user (``await request.auser()`` behind Django's
``AuthenticationMiddleware``) and renders a JSON list of 10 books with
``select_related("author")`` and ``prefetch_related("tags")``. The same code
is served two ways, chosen by ``$ASYNC_DB_AUTH_SITE_NATIVE``:

* ``1``: async-db's opt-in (``ASYNC_DB = {"NATIVE_ORM": True}``), its session
  engine and its ``SessionMiddleware``: every query runs natively on the
  request task's async-db connection;
* ``0``: Django's own session engine and middleware, Django's async ORM
  (``sync_to_async``).

Settings: :mod:`.settings`; tables and the prepared session: :mod:`.setup_db`.
"""
