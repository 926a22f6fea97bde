"""Values round-trip as Django's own postgresql backend returns them."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
import zoneinfo
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

INSTANT = "2024-03-10 12:30:00+00"


async def fetch(conn: Any, sql: str, params: Any = None) -> Any:
    async with conn.cursor() as cursor:
        await cursor.execute(sql, params)
        return await cursor.fetchone()


async def test_use_tz_true_returns_aware_utc(make_connection: Any) -> None:
    with override_settings(USE_TZ=True, TIME_ZONE="America/Chicago"):
        conn = make_connection()
        try:
            (value,) = await fetch(conn, f"SELECT '{INSTANT}'::timestamptz")
            (tz,) = await fetch(conn, "SHOW TimeZone")
        finally:
            await conn.close()
    assert value == datetime.datetime(2024, 3, 10, 12, 30, tzinfo=datetime.UTC)
    assert value.tzinfo == datetime.UTC
    assert tz == "UTC"


async def test_use_tz_true_with_database_time_zone(make_connection: Any) -> None:
    with override_settings(USE_TZ=True):
        conn = make_connection(TIME_ZONE="Europe/Paris")
        try:
            (value,) = await fetch(conn, f"SELECT '{INSTANT}'::timestamptz")
            (tz,) = await fetch(conn, "SHOW TimeZone")
        finally:
            await conn.close()
    assert value.tzinfo == zoneinfo.ZoneInfo("Europe/Paris")
    assert value == datetime.datetime(2024, 3, 10, 12, 30, tzinfo=datetime.UTC)
    assert tz == "Europe/Paris"


async def test_use_tz_false_returns_naive_local_time(make_connection: Any) -> None:
    with override_settings(USE_TZ=False, TIME_ZONE="America/Chicago"):
        conn = make_connection()
        try:
            (value,) = await fetch(conn, f"SELECT '{INSTANT}'::timestamptz")
            (tz,) = await fetch(conn, "SHOW TimeZone")
        finally:
            await conn.close()
    # 12:30 UTC is 07:30 in Chicago (CDT starts 2024-03-10 08:00 UTC).
    assert value == datetime.datetime(2024, 3, 10, 7, 30)
    assert value.tzinfo is None
    assert tz == "America/Chicago"


async def test_aware_datetime_round_trip(connection: Any) -> None:
    moment = datetime.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
    (value,) = await fetch(connection, "SELECT %s::timestamptz", [moment])
    assert value == moment


async def test_database_time_zone_needs_use_tz(make_connection: Any) -> None:
    with override_settings(USE_TZ=False):
        conn = make_connection(TIME_ZONE="Europe/Paris")
        with pytest.raises(ImproperlyConfigured, match="cannot set TIME_ZONE"):
            await conn.ensure_connection()
    assert conn.connection is None


async def test_json_uuid_decimal_round_trip(connection: Any) -> None:
    ident = uuid.uuid4()
    amount = decimal.Decimal("12345.678901234567890")
    payload = {"a": [1, 2, {"b": "c'd"}]}
    from psycopg.types.json import Jsonb

    row = await fetch(
        connection,
        "SELECT %s::uuid, %s::numeric, %s::jsonb, %s::date",
        [ident, amount, Jsonb(payload), datetime.date(2024, 2, 29)],
    )
    assert row[0] == ident and isinstance(row[0], uuid.UUID)
    assert row[1] == amount and isinstance(row[1], decimal.Decimal)
    # As Django's backend: jsonb comes back as text for JSONField.from_db_value.
    assert isinstance(row[2], str) and json.loads(row[2]) == payload
    assert row[3] == datetime.date(2024, 2, 29)


async def test_inet_comes_back_as_text_as_in_django(connection: Any) -> None:
    (value,) = await fetch(connection, "SELECT '10.0.0.1'::inet")
    assert value == "10.0.0.1"
