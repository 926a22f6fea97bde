"""aiterator() streams from a server-side cursor; USE_TZ=False parity."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from async_db import async_atomic, async_connections
from async_db.backends.base.cursor import AsyncCursorWrapper
from tests.ormapp.models import Note

pytestmark = pytest.mark.usefixtures("orm")

ROWS = 5000


@pytest.fixture
def many_notes(observer: Any) -> Any:
    observer.execute(
        "INSERT INTO ormapp_note (text, n, updated) "
        "SELECT 'note ' || g, g, now() FROM generate_series(1, %s) g",
        [ROWS],
    )
    try:
        yield
    finally:
        observer.execute("DELETE FROM ormapp_note")


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int | None, int]]:
    """Spy on the async cursor's fetchmany: (size asked, rows returned)."""
    calls: list[tuple[int | None, int]] = []
    original = AsyncCursorWrapper.fetchmany

    async def spy(self: AsyncCursorWrapper, size: int | None = None) -> list[Any]:
        rows = await original(self, size)
        calls.append((size, len(rows)))
        return rows

    monkeypatch.setattr(AsyncCursorWrapper, "fetchmany", spy)
    return calls


async def open_server_cursors() -> list[str]:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("SELECT name FROM pg_cursors")
        return [name for (name,) in await cursor.fetchall()]


@pytest.mark.usefixtures("many_notes")
@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "atomic"])
async def test_aiterator_streams(
    fetches: list[tuple[int | None, int]], in_transaction: bool
) -> None:
    async def consume() -> list[int]:
        seen: list[int] = []
        iterator = (
            Note.objects.order_by("n")
            .values_list("n", flat=True)
            .aiterator(chunk_size=100)
        )
        async for n in iterator:
            seen.append(n)
            if len(seen) == 150:
                # Two blocks of 100 fetched so far, from a cursor that lives
                # on the server, never the 5000 rows.
                assert fetches == [(100, 100), (100, 100)]
                assert len(await open_server_cursors()) == 1
        return seen

    if in_transaction:
        async with async_atomic():
            seen = await consume()
    else:
        seen = await consume()
    assert seen == list(range(1, ROWS + 1))
    assert len(fetches) == ROWS // 100 + 1  # the last, empty fetch ends it
    assert all(size == 100 and got <= 100 for size, got in fetches)
    assert await open_server_cursors() == []  # closed when exhausted


@pytest.mark.usefixtures("many_notes")
async def test_aiterator_models_and_early_close(
    fetches: list[tuple[int | None, int]],
) -> None:
    iterator = Note.objects.order_by("n").aiterator(chunk_size=50)
    first = await anext(iterator)
    assert isinstance(first, Note) and first.n == 1 and first._state.db == "default"
    await iterator.aclose()  # abandoned early: the server cursor is closed
    assert await open_server_cursors() == []
    assert fetches == [(50, 50)]


async def test_aiterator_validates_chunk_size() -> None:
    with pytest.raises(ValueError, match=r"Chunk size must be strictly positive\."):
        await anext(Note.objects.aiterator(chunk_size=0))


TZ_SCRIPT = textwrap.dedent(
    """
    import asyncio, datetime, os, sys
    import django
    from django.conf import settings
    from async_db._embedded import settings_dict_from_dsn

    entry = settings_dict_from_dsn(sys.argv[1], application_name="async-db-tests")
    entry["TEST"] = {"NAME": entry["NAME"]}
    settings.configure(
        USE_TZ=False, TIME_ZONE="Europe/Paris", DATABASES={"default": entry},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                        "tests.ormapp"],
    )
    django.setup()
    from django.db import connection, connections, models
    from async_db.models import AsyncModel

    class Probe(AsyncModel):
        when = models.DateTimeField()
        class Meta:
            app_label = "ormapp"
            db_table = f"ormapp_tz_probe_{os.getpid()}"

    with connection.schema_editor() as editor:
        editor.create_model(Probe)
    try:
        Probe.objects.create(when=datetime.datetime(2024, 3, 31, 1, 30))
        sync_values = list(Probe.objects.values_list("when", flat=True))
        sync_hours = list(Probe.objects.datetimes("when", "hour"))
        connections.close_all()

        async def main():
            values = [v async for v in Probe.objects.values_list("when", flat=True)]
            hours = [v async for v in Probe.objects.datetimes("when", "hour")]
            obj = await Probe.objects.acreate(when=datetime.datetime(2024, 1, 1, 12))
            back = await Probe.objects.aget(pk=obj.pk)
            return values, hours, back.when

        values, hours, back = asyncio.run(main())
        assert values == sync_values, (values, sync_values)
        assert all(v.tzinfo is None for v in values), values
        assert hours == sync_hours, (hours, sync_hours)
        assert back == datetime.datetime(2024, 1, 1, 12), back
        print("parity", values, hours)
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Probe)
        connections.close_all()
    """
)


def test_use_tz_false_parity(dsn: str) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", TZ_SCRIPT, dsn],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert result.returncode == 0, result.stderr
    assert "parity [datetime.datetime(2024, 3, 31, 1, 30)]" in result.stdout
