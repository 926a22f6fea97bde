"""The sync connection Django's SQL compilation sees, fed from the async one.

Django compiles a query against a sync ``DatabaseWrapper`` (``compiler.connection``)
and, in a few places, asks that wrapper for *live* state, which would open a
sync connection:

- ``SQLCompiler.as_sql()`` calls ``connection.get_autocommit()`` for
  ``select_for_update()`` (it connects);
- ``features.is_postgresql_15/16/17`` (JSON functions, unique constraints)
  read ``connection.pg_version``, which opens a temporary connection;
- ``Q.check()`` reads ``connection.in_atomic_block``;
- ``ops.compose_sql()`` (mogrify) needs a cursor.

This module is the one place that answers those questions from the current
task's *async* wrapper instead. :func:`compile_connection` returns, per alias,
a never-connected instance of the alias's sync backend class whose
``get_autocommit()``, ``in_atomic_block`` and ``pg_version`` come from the async
wrapper, whose ``ops`` build async-db's compilers
(``async_db.models.sql.compiler``), and whose ``cursor()``/``connect()`` raise
``NotSupportedError``: a native call can never open a sync connection.

Django code also looks the connection up by alias (``query.get_compiler(using)``
is ``connections[using]``, for instance inside ``Query.get_aggregation`` and
``SQLAggregateCompiler``). :func:`run_native` runs such sync code in a *copy* of
the current context in which ``django.db.connections[alias]`` is the compile
connection: asgiref's ``Local`` is copy-on-write per context, so no other task,
thread or later code of this task sees the swap.

Django versions: written against 5.2, which passes fully. What 6.0 changes
for the native ORM is kept in named seams: ``Model.save()``/``asave()`` lose
their positional arguments (``base.SAVE_ACCEPTS_POSITIONAL_ARGS``); the
compilation entry points used here (``get_compiler``, ``as_sql``,
``get_converters``, ``results_iter(results=...)``, ``get_related_populators``)
keep their 5.2 signatures there. django-stubs already describes a later
``get_related_populators(..., fetch_mode)``: the iterables call it with 5.2's
arguments and need a seam when that lands.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import NotSupportedError, connections
from django.db.utils import load_backend

if TYPE_CHECKING:
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper

T = TypeVar("T")

#: The async wrapper the compile connection answers from (set per native call).
_current: contextvars.ContextVar[BaseAsyncDatabaseWrapper | None] = (
    contextvars.ContextVar("async_db_native_connection", default=None)
)

COMPILER_MODULE = "async_db.models.sql.compiler"


class NeedsConnection(BaseException):
    """Compilation asked for live state (autocommit, server version) before the
    task's async connection was open: the caller connects and compiles again.
    A ``BaseException`` so that no ``except Exception`` in Django swallows it."""


def current_async_connection() -> BaseAsyncDatabaseWrapper:
    """The async wrapper of the native call being compiled."""
    conn = _current.get()
    if conn is None:
        raise NotSupportedError(
            "Django's SQL compiler asked async-db's compile connection for live "
            "connection state outside a native ORM call."
        )
    return conn


class CompileConnectionMixin:
    """Mixed in before a sync backend's ``DatabaseWrapper``: live state comes
    from the async wrapper, and nothing ever connects."""

    alias: str
    _async_db_pg_version: int | None = None

    def _refuse(self, what: str) -> Any:
        raise NotSupportedError(
            f"A native ORM call on database '{self.alias}' reached {what} on "
            f"Django's sync connection; async-db never opens a sync connection "
            f"for native calls. This query shape is not native yet."
        )

    def get_autocommit(self) -> bool:
        conn = current_async_connection()
        if conn.connection is None:
            raise NeedsConnection
        return bool(conn.autocommit)

    @property
    def in_atomic_block(self) -> bool:
        conn = _current.get()
        return bool(conn is not None and conn.in_atomic_block)

    @in_atomic_block.setter
    def in_atomic_block(self, value: bool) -> None:
        # BaseDatabaseWrapper.__init__ assigns False; the state lives on the
        # async wrapper.
        pass

    @property
    def pg_version(self) -> int:
        version = self._async_db_pg_version
        if version is None:
            conn = current_async_connection()
            if conn.connection is None:
                raise NeedsConnection
            version = int(conn.connection.info.server_version)
            self._async_db_pg_version = version
        return version

    def ensure_connection(self) -> None:
        self._refuse("ensure_connection()")

    def connect(self) -> None:
        self._refuse("connect()")

    def cursor(self) -> Any:
        return self._refuse("cursor()")

    def chunked_cursor(self) -> Any:
        return self._refuse("chunked_cursor()")


@functools.cache
def _compile_class(base: type) -> type:
    return type(f"Compile{base.__name__}", (CompileConnectionMixin, base), {})


#: alias -> (settings dict it was built from, compile connection)
_instances: dict[str, tuple[dict[str, Any], Any]] = {}


def compile_connection(conn: BaseAsyncDatabaseWrapper) -> Any:
    """The compile connection for ``conn``'s alias (built once per settings)."""
    cached = _instances.get(conn.alias)
    if cached is not None and cached[0] is conn.settings_dict:
        return cached[1]
    backend = load_backend(conn.settings_dict["ENGINE"])
    instance = _compile_class(backend.DatabaseWrapper)(conn.settings_dict, conn.alias)
    instance.ops.compiler_module = COMPILER_MODULE
    _instances[conn.alias] = (conn.settings_dict, instance)
    return instance


def _swap_and_call(
    conn: BaseAsyncDatabaseWrapper,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> T:
    _current.set(conn)
    connections[conn.alias] = compile_connection(conn)
    return fn(*args, **kwargs)


def run_native(
    conn: BaseAsyncDatabaseWrapper, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run Django's sync compilation code ``fn`` with ``connections[alias]``
    (and every compiler it builds) answering from ``conn``. No I/O."""
    _check_local_is_copy_on_write()
    ctx = contextvars.copy_context()
    return ctx.run(_swap_and_call, conn, fn, args, kwargs)


async def acompile(
    conn: BaseAsyncDatabaseWrapper, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """:func:`run_native`; if compilation needs the live connection first
    (``NeedsConnection``), connect and compile again. ``fn`` must be
    re-runnable."""
    try:
        return run_native(conn, fn, *args, **kwargs)
    except NeedsConnection:
        await conn.ensure_connection()
        return run_native(conn, fn, *args, **kwargs)


@functools.cache
def _check_local_is_copy_on_write() -> None:
    """The swap in :func:`run_native` must stay inside its copied context: true
    of asgiref's ``Local`` since it copies its storage on write. Checked once."""
    probe = "_async_db_probe"

    handler: Any = connections

    def write() -> None:
        handler[probe] = object()

    contextvars.copy_context().run(write)
    leaked = hasattr(handler._connections, probe)
    if leaked:  # pragma: no cover - depends on the installed asgiref
        delattr(handler._connections, probe)
        raise ImproperlyConfigured(
            "async_db.models needs an asgiref whose Local copies its storage on "
            "write (asgiref >= 3.8): upgrade asgiref."
        )
