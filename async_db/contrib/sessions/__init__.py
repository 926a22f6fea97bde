"""Native sessions: ``SESSION_ENGINE = "async_db.contrib.sessions.backends.db"``
and the async-native :class:`~async_db.contrib.sessions.middleware.
SessionMiddleware`. Same table (``django_session``) and format as Django's
``db`` engine: sync and async code share sessions."""
