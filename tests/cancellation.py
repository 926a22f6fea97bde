"""Cancellation injection: cancel a task at its Nth network wait in psycopg.

Every I/O wait of ``psycopg.AsyncConnection`` goes through its ``wait()``
method. The injector counts those calls; on the Nth it cancels the running
task just before delegating, so the ``CancelledError`` arrives while that
operation is on the wire (the query sent, its result awaited). Nothing is
mocked: the real driver talks to the real server, and its own cancellation
handling (cancel request, drain) runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest


class CancelInjector:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.target: int | None = None
        self.armed = False
        #: Only this task's waits count (not pool workers', not releases').
        self.task: asyncio.Task[Any] | None = None
        real_wait = psycopg.AsyncConnection.wait
        injector = self

        async def wait(conn: Any, gen: Any, *args: Any, **kwargs: Any) -> Any:
            task = asyncio.current_task()
            if injector.armed and task is injector.task and task is not None:
                injector.calls += 1
                if injector.calls == injector.target:
                    task.cancel()
            return await real_wait(conn, gen, *args, **kwargs)

        monkeypatch.setattr(psycopg.AsyncConnection, "wait", wait)

    def arm(self) -> None:
        """Start counting (call after the scenario's setup)."""
        self.armed = True

    def reset(self, target: int | None) -> None:
        self.calls = 0
        self.target = target
        self.armed = False


Scenario = Callable[[CancelInjector], Awaitable[Any]]


async def count_waits(injector: CancelInjector, scenario: Scenario) -> int:
    """Run ``scenario`` once uncancelled; return its number of waits."""
    injector.reset(None)
    injector.task = asyncio.create_task(scenario(injector))
    await injector.task
    return injector.calls


async def run_cancelled_at(
    injector: CancelInjector, scenario: Scenario, point: int
) -> BaseException | None:
    """Run ``scenario`` in its own task, cancelled at wait ``point``; return
    what the task raised (None if it completed)."""
    injector.reset(point)
    task = injector.task = asyncio.create_task(scenario(injector))
    try:
        await task
    except BaseException as exc:  # the caller asserts on what it was
        return exc
    finally:
        injector.reset(None)
    return None


#: (scenario, cancel point) pairs exercised this run, reported at the end.
PAIRS: list[tuple[str, int]] = []


async def run_cancelled_after_yields(
    scenario: Scenario, yields: int
) -> tuple[bool, BaseException | None]:
    """Run ``scenario`` in its own task and cancel it after ``yields`` turns of
    the event loop, wherever it is suspended then (connect, pool wait, query,
    release...). Return (whether the cancel was delivered, what it raised)."""
    task = asyncio.create_task(scenario(_NO_INJECTOR))
    for _ in range(yields):
        await asyncio.sleep(0)
        if task.done():
            break
    delivered = not task.done()
    task.cancel()
    try:
        await task
    except BaseException as exc:  # the caller asserts on what it was
        return delivered, exc
    return delivered, None


class _NoInjector:
    def arm(self) -> None:
        pass


_NO_INJECTOR: Any = _NoInjector()
