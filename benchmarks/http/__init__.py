"""HTTP scenario: Django views served by uvicorn, async-db against the ORM.

Issue 6, scenario 5. Two pairs of views of the example site
(:mod:`benchmarks.http.site`) doing the same work are put under load over real
HTTP on loopback: a point lookup (async-db cursor vs ``Item.objects.aget``)
and a short transaction (``async_atomic`` vs ``transaction.atomic`` through
``sync_to_async``). Reported per view: requests/s, p50 and p99 latency,
errors, and the peak number of server backends, and the ratio of async-db's
requests/s to the ORM's.

``run(dsn, config)`` returns an :class:`~benchmarks.http._results.HttpResult`,
which has what ``python -m benchmarks`` needs of a result (``scenario``,
``title``, ``server_version``, ``to_json(config)``, ``report()``; also
``comparisons`` in ``_harness.Comparison``'s shape), so the module can be
listed in its ``SCENARIOS``. ``config`` is an :class:`HttpConfig`, None (the
default size), or the harness's ``RunConfig``, read duck-typed (its ``mode``
picks the quick/default/full preset; ``rounds_override`` is honoured; its batch
size is ignored). Standalone: ``python -m benchmarks.http [--quick|--full]``.
How it runs: :mod:`benchmarks.http._runner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.http._results import HttpResult
    from benchmarks.http._runner import HttpConfig

NAME = "http"
TITLE = "Django views over HTTP (uvicorn): async-db vs the ORM's async path"

__all__ = ["NAME", "TITLE", "HttpConfig", "run"]


async def run(dsn: str, config: Any = None) -> HttpResult:
    """Run the scenario against ``dsn``; progress lines go to stderr."""
    # Imported here: the example site's servers import this package too, and
    # need none of the runner.
    from benchmarks.http import _runner

    return await _runner.run(dsn, config)


def __getattr__(name: str) -> Any:
    if name in ("HttpConfig", "QUICK", "DEFAULT", "FULL"):
        from benchmarks.http import _runner

        return getattr(_runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
