"""A Channels consumer that writes through the native ORM, tested with
``WebsocketCommunicator``, is isolated by the test helpers (issue 13, item 4).

asgiref's communicator starts the application in an *empty* context, so the
consumer's task saw nothing of the test's transaction: its writes went to a
connection of its own and were committed. Inside the helpers (the pytest
marker, ``TestCase``) it starts in a copy of the test's context: a task the
test spawned, under the spawned-task rule. Without pytest-django here (the
suite's own settings); tests/test_django_testcase.py and
tests/test_pytest_django.py cover Django's runner and pytest-django.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.db.transaction import TransactionManagementError

from async_db.test import communicators_in_test_context
from tests.ormapp.models import Note

pytestmark = pytest.mark.usefixtures("orm_tables")


class NoteConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def receive(
        self, text_data: str | None = None, bytes_data: Any = None
    ) -> None:
        note = await Note.objects.acreate(text=json.loads(text_data or "{}")["text"])
        await self.send(text_data=json.dumps({"id": note.pk}))


def committed_notes(observer: Any, text: str) -> int:
    row = observer.execute(
        "SELECT count(*) FROM ormapp_note WHERE text = %s", [text]
    ).fetchone()
    return int(row[0])


async def talk(text: str) -> dict[str, Any]:
    communicator = WebsocketCommunicator(NoteConsumer.as_asgi(), "/ws/")
    try:
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_to(text_data=json.dumps({"text": text}))
        reply: dict[str, Any] = json.loads(await communicator.receive_from())
    finally:
        await communicator.disconnect()
    return reply


@pytest.mark.async_db(spawned_tasks="share")
async def test_consumer_shares_the_test_transaction(observer: Any) -> None:
    reply = await talk("ws share")
    # The test sees the consumer's row; no other session does.
    note = await Note.objects.aget(pk=reply["id"])
    assert note.text == "ws share"
    assert committed_notes(observer, "ws share") == 0


def test_share_mode_wrote_nothing(observer: Any) -> None:
    assert committed_notes(observer, "ws share") == 0


@pytest.mark.async_db
async def test_consumer_refused_in_forbid_mode(observer: Any) -> None:
    with pytest.raises(TransactionManagementError, match="'default'"):
        await talk("ws forbid")
    assert committed_notes(observer, "ws forbid") == 0


async def test_without_the_helpers_the_consumer_commits(observer: Any) -> None:
    """What the helpers fix: outside them, the communicator's empty context
    gives the consumer a connection of its own, which commits."""
    try:
        await talk("ws escaped")
        assert committed_notes(observer, "ws escaped") == 1
    finally:
        observer.execute("DELETE FROM ormapp_note WHERE text = 'ws escaped'")


async def test_context_restored_after_the_helpers() -> None:
    from asgiref.testing import ApplicationCommunicator

    original = ApplicationCommunicator.future
    with communicators_in_test_context(), communicators_in_test_context():
        assert ApplicationCommunicator.future is not original
    assert ApplicationCommunicator.future is original
