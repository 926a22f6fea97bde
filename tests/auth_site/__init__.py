"""A small Django site on the native request path (issue 12, item 6): the
opt-in, async-db's session engine and middleware, Django's
``AuthenticationMiddleware``, async views that log in, read the user and write
the session. Served by uvicorn in ``tests/test_e2e_auth.py``."""
