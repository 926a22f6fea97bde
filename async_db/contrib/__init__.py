"""Native async twins of ``django.contrib`` code on the request path: the
session engine and middleware (:mod:`async_db.contrib.sessions`), the
login functions (:mod:`async_db.contrib.auth`), and the content type lookups
(:mod:`async_db.contrib.contenttypes`). See ``docs/orm.rst``."""
