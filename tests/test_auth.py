"""A wrong password fails cleanly and the password never leaks.

The tests' server may trust every client, so these tests start their own small
embedded server that requires a password for one role.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import OperationalError

from async_db._embedded import EmbeddedServer, settings_dict_from_dsn
from async_db._engine import create_connection
from tests.fix_db import configured

SECRET = "Sup3r-s3cret-pw"
ROLE = "async_db_pw_user"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[dict[str, Any]]:
    server = EmbeddedServer()
    try:
        hba = os.path.join(server.pgdata, "pg_hba.conf")
        with open(hba) as f:
            rules = f.read()
        with open(hba, "w") as f:
            f.write(f"local all {ROLE} scram-sha-256\n" + rules)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{SECRET}'")
        yield settings_dict_from_dsn(server.dsn)
    finally:
        server.stop()


def settings_for(auth_server: dict[str, Any], password: str) -> dict[str, Any]:
    return configured({**auth_server, "USER": ROLE, "PASSWORD": password})


async def test_right_password_connects(auth_server: dict[str, Any]) -> None:
    conn = create_connection("default", settings_for(auth_server, SECRET))
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT current_user")
            assert await cursor.fetchone() == (ROLE,)
        assert SECRET not in repr(conn.connection)
        assert SECRET not in repr(conn)
    finally:
        await conn.close()


async def test_wrong_password_is_operational_error_without_the_password(
    auth_server: dict[str, Any], caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wr0ng-" + SECRET
    conn = create_connection("default", settings_for(auth_server, wrong))
    conn.force_debug_cursor = True
    with pytest.raises(OperationalError) as info:
        async with conn.cursor():
            pass
    assert "password authentication failed" in str(info.value)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    texts = [
        str(info.value),
        repr(info.value),
        str(info.value.__cause__),
        repr(info.value.__cause__),
        repr(conn),
        caplog.text,
    ]
    texts += [str(arg) for arg in info.value.args]
    for text in texts:
        assert wrong not in text
        assert SECRET not in text
    assert conn.connection is None
