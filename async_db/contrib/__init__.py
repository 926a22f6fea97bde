"""Native async twins of ``django.contrib`` code on the request path: the
session engine and middleware (:mod:`async_db.contrib.sessions`) and the
login functions (:mod:`async_db.contrib.auth`). See ``docs/orm.rst``."""
