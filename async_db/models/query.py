"""``AsyncQuerySet``: Django's ``QuerySet`` whose async methods run natively.

Read this file beside ``django/db/models/query.py``: each method is the async
twin of the Django method it names, with Django's checks and branch order; the
SQL is Django's (``query.get_compiler(...)``, ``as_sql()``), executed with the
async-db compilers (``sql/compiler.py``) on ``async_connections[qs.db]`` of the
current task. No method falls back to ``sync_to_async``; what is not native
yet raises ``NotSupportedError`` naming it. Sync evaluation (``list(qs)``,
``len(qs)``, ``qs[0]``) is Django's, unchanged.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, overload

from django.core import exceptions
from django.db import IntegrityError, NotSupportedError
from django.db.models import AutoField, Field, Model, Value, When, sql
from django.db.models import query as django_query
from django.db.models.aggregates import Count
from django.db.models.constants import OnConflict
from django.db.models.expressions import Case
from django.db.models.functions import Cast
from django.db.models.query import MAX_GET_RESULTS
from django.db.models.sql import query as django_sql_query
from django.db.models.sql.constants import GET_ITERATOR_CHUNK_SIZE, ROW_COUNT, SINGLE
from django.db.models.utils import create_namedtuple_class, resolve_callables
from django.utils.functional import partition

from async_db.models.sql.compile_connection import (
    acompile,
    compile_connection,
    run_native,
)
from async_db.models.sql.compiler import Deferred, native_compiler
from async_db.transaction import async_atomic, mark_for_rollback_on_error

if TYPE_CHECKING:
    from async_db.backends.base.base import BaseAsyncDatabaseWrapper
    from async_db.models.base import NativeInstance

# django-stubs types QuerySet's and the iterables' private API (which the
# twins use exactly as Django does) incompletely: the bases are typed as Any.
_QuerySet: Any = django_query.QuerySet
_get_related_populators: Any = django_query.get_related_populators
_EXPLAIN_OPTIONS_PATTERN: Any = vars(django_sql_query)["EXPLAIN_OPTIONS_PATTERN"]
_ExplainInfo: Any = vars(django_sql_query)["ExplainInfo"]
_ModelIterable: Any = django_query.ModelIterable
_ValuesIterable: Any = django_query.ValuesIterable
_ValuesListIterable: Any = django_query.ValuesListIterable
_NamedValuesListIterable: Any = django_query.NamedValuesListIterable
_FlatValuesListIterable: Any = django_query.FlatValuesListIterable
_RawQuerySet: Any = django_query.RawQuerySet

__all__ = [
    "AsyncQuerySet",
    "FlatValuesListIterable",
    "ModelIterable",
    "NamedValuesListIterable",
    "ValuesIterable",
    "ValuesListIterable",
    "async_queryset_class",
    "native",
]


def _connection(alias: str) -> BaseAsyncDatabaseWrapper:
    from async_db import async_connections

    return async_connections[alias]


async def _arows(
    compiler: Any, results: Any, tuple_expected: bool = False
) -> AsyncGenerator[Any, None]:
    """Rows of ``aexecute_sql(MULTI)``'s result through Django's
    ``results_iter(results=...)`` (converters included), block by block."""
    if isinstance(results, list):
        for row in compiler.results_iter(results, tuple_expected=tuple_expected):
            yield row
        return
    # aclosing: an abandoned iteration closes the server-side cursor now.
    async with aclosing(results):
        async for block in results:
            for row in compiler.results_iter([block], tuple_expected=tuple_expected):
                yield row


class _AsyncIterableMixin:
    """``__aiter__`` of the twins: native rows instead of Django's
    ``BaseIterable._async_generator`` (a ``sync_to_async`` per chunk)."""

    queryset: Any
    chunked_fetch: bool
    chunk_size: int
    #: Each twin's rows (an ``async def`` generator method).
    _aiter: Callable[[], AsyncGenerator[Any, None]]

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        return self._aiter()

    async def _aexecute(self) -> tuple[Any, Any]:
        queryset = self.queryset
        compiler = await native_compiler(queryset.query, _connection(queryset.db))
        results = await compiler.aexecute_sql(
            chunked_fetch=self.chunked_fetch, chunk_size=self.chunk_size
        )
        return compiler, results


class ModelIterable(_AsyncIterableMixin, _ModelIterable):  # type: ignore[misc]
    """Async twin of ``ModelIterable``: a model instance per row, built by
    ``Model.from_db`` and Django's related populators."""

    async def _aiter(self) -> AsyncGenerator[Any, None]:
        queryset = self.queryset
        db = queryset.db
        # Execute the query. This will also fill compiler.select, klass_info,
        # and annotations.
        compiler, results = await self._aexecute()
        select, klass_info, annotation_col_map = (
            compiler.select,
            compiler.klass_info,
            compiler.annotation_col_map,
        )
        model_cls = klass_info["model"]
        select_fields = klass_info["select_fields"]
        model_fields_start, model_fields_end = select_fields[0], select_fields[-1] + 1
        init_list = [
            f[0].target.attname for f in select[model_fields_start:model_fields_end]
        ]
        related_populators = _get_related_populators(klass_info, select, db)
        known_related_objects = [
            (
                field,
                related_objs,
                operator.attrgetter(
                    *[
                        (
                            field.attname
                            if from_field == "self"
                            else queryset.model._meta.get_field(from_field).attname
                        )
                        for from_field in field.from_fields
                    ]
                ),
            )
            for field, related_objs in queryset._known_related_objects.items()
        ]
        async with aclosing(_arows(compiler, results)) as rows:
            async for row in rows:
                obj = model_cls.from_db(
                    db, init_list, row[model_fields_start:model_fields_end]
                )
                for rel_populator in related_populators:
                    rel_populator.populate(row, obj)
                if annotation_col_map:
                    for attr_name, col_pos in annotation_col_map.items():
                        setattr(obj, attr_name, row[col_pos])
                # Add the known related objects to the model.
                for field, rel_objs, rel_getter in known_related_objects:
                    # Avoid overwriting objects loaded by, e.g., select_related().
                    if field.is_cached(obj):
                        continue
                    rel_obj_id = rel_getter(obj)
                    try:
                        rel_obj = rel_objs[rel_obj_id]
                    except KeyError:
                        pass  # May happen in qs1 | qs2 scenarios.
                    else:
                        setattr(obj, field.name, rel_obj)
                yield obj


class ValuesIterable(_AsyncIterableMixin, _ValuesIterable):  # type: ignore[misc]
    """Async twin of ``ValuesIterable``: a dict per row."""

    async def _aiter(self) -> AsyncGenerator[Any, None]:
        query = self.queryset.query
        if query.selected:
            names = list(query.selected)
        else:
            # extra(select=...) cols are always at the start of the row.
            names = [
                *query.extra_select,
                *query.values_select,
                *query.annotation_select,
            ]
        indexes = range(len(names))
        compiler, results = await self._aexecute()
        async with aclosing(_arows(compiler, results)) as rows:
            async for row in rows:
                yield {names[i]: row[i] for i in indexes}


class ValuesListIterable(_AsyncIterableMixin, _ValuesListIterable):  # type: ignore[misc]
    """Async twin of ``ValuesListIterable``: a tuple per row."""

    async def _aiter(self) -> AsyncGenerator[Any, None]:
        compiler, results = await self._aexecute()
        async with aclosing(_arows(compiler, results, tuple_expected=True)) as rows:
            async for row in rows:
                yield row


class NamedValuesListIterable(ValuesListIterable, _NamedValuesListIterable):  # type: ignore[misc]
    """Async twin of ``NamedValuesListIterable``: a namedtuple per row."""

    async def _aiter(self) -> AsyncGenerator[Any, None]:
        queryset = self.queryset
        if queryset._fields:
            names = queryset._fields
        else:
            query = queryset.query
            names = [
                *query.extra_select,
                *query.values_select,
                *query.annotation_select,
            ]
        tuple_class = create_namedtuple_class(*names)
        new = tuple.__new__
        async with aclosing(super()._aiter()) as rows:
            async for row in rows:
                yield new(tuple_class, row)


class FlatValuesListIterable(_AsyncIterableMixin, _FlatValuesListIterable):  # type: ignore[misc]
    """Async twin of ``FlatValuesListIterable`` (also ``dates()`` and
    ``datetimes()``): the single value of each row."""

    async def _aiter(self) -> AsyncGenerator[Any, None]:
        compiler, results = await self._aexecute()
        async with aclosing(_arows(compiler, results)) as rows:
            async for row in rows:
                yield row[0]


#: Django's iterable classes -> their async twins.
_TWINS: dict[type, type] = {
    django_query.ModelIterable: ModelIterable,
    django_query.ValuesIterable: ValuesIterable,
    django_query.ValuesListIterable: ValuesListIterable,
    django_query.NamedValuesListIterable: NamedValuesListIterable,
    django_query.FlatValuesListIterable: FlatValuesListIterable,
}


class AsyncQuerySet(_QuerySet):  # type: ignore[misc]
    """A ``QuerySet`` whose Django async methods run on the current task's
    async connection (``async_connections[qs.db]``)."""

    _result_cache: list[Any] | None
    _iterable_class: Any

    # ##### Evaluation #####

    def _native_iterable(
        self, chunked_fetch: bool = False, chunk_size: int = GET_ITERATOR_CHUNK_SIZE
    ) -> AsyncGenerator[Any, None]:
        iterable_class = self._iterable_class
        twin = _TWINS.get(iterable_class, iterable_class)
        if not issubclass(twin, _AsyncIterableMixin):
            raise NotSupportedError(
                f"Iterating {self.model.__qualname__} querysets with the iterable "
                f"class {iterable_class.__qualname__} is not native: async-db "
                f"evaluates Django's own iterable classes only."
            )
        iterable: Any = twin(self, chunked_fetch=chunked_fetch, chunk_size=chunk_size)
        aiter_: AsyncGenerator[Any, None] = iterable.__aiter__()
        return aiter_

    async def _afetch_all(self) -> None:
        """Async twin of ``QuerySet._fetch_all()``: the rows, then the
        ``prefetch_related()`` lookups (:func:`aprefetch_related_objects`),
        on the task's connection."""
        if self._result_cache is None:
            self._result_cache = [obj async for obj in self._native_iterable()]
        prefetch_done: bool = self._prefetch_done  # type: ignore[has-type]
        if self._prefetch_related_lookups and not prefetch_done:
            await aprefetch_related_objects(
                self._result_cache, *self._prefetch_related_lookups
            )
            self._prefetch_done = True

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        """Async twin of ``QuerySet.__aiter__()``: fills the result cache
        natively, then yields from it."""

        async def generator() -> AsyncGenerator[Any, None]:
            await self._afetch_all()
            for item in self._result_cache or ():
                yield item

        return generator()

    async def aiterator(self, chunk_size: int = 2000) -> AsyncGenerator[Any, None]:
        """Async twin of ``QuerySet.aiterator()``: streams through a
        server-side cursor (``chunked_cursor()``), ``fetchmany(chunk_size)``
        at a time; never loads every row, never fills the result cache. With
        ``prefetch_related()``, as Django 5.x: each ``chunk_size`` objects
        get their prefetches (:func:`aprefetch_related_objects`) before they
        are yielded."""
        if chunk_size <= 0:
            raise ValueError("Chunk size must be strictly positive.")
        use_chunked_fetch = not _connection(self.db).settings_dict.get(
            "DISABLE_SERVER_SIDE_CURSORS"
        )
        async with aclosing(
            self._native_iterable(use_chunked_fetch, chunk_size)
        ) as items:
            if self._prefetch_related_lookups:
                results = []

                async for item in items:
                    results.append(item)
                    if len(results) >= chunk_size:
                        await aprefetch_related_objects(
                            results, *self._prefetch_related_lookups
                        )
                        for result in results:
                            yield result
                        results.clear()

                if results:
                    await aprefetch_related_objects(
                        results, *self._prefetch_related_lookups
                    )
                    for result in results:
                        yield result
            else:
                async for item in items:
                    yield item

    def raw(
        self,
        raw_query: str,
        params: Any = (),
        translations: Any = None,
        using: str | None = None,
    ) -> Any:
        """Django's ``raw()``, as an :class:`AsyncRawQuerySet`."""
        qs = super().raw(raw_query, params, translations, using)
        qs.__class__ = AsyncRawQuerySet
        return qs

    # ##### Aggregation and counting #####

    async def _aaggregation(self, run: Callable[[], Any]) -> Any:
        """Run Django's ``Query.get_aggregation()`` (via ``run``) up to its
        ``execute_sql(SINGLE)``, execute natively, then Django's tail."""
        conn = _connection(self.db)
        try:
            return await acompile(conn, run)
        except Deferred as deferred:
            compiler: Any = deferred.compiler
        result = await compiler.aexecute_sql(SINGLE)
        # The tail of Query.get_aggregation(), after execute_sql(SINGLE).
        outer_query = compiler.query
        if result is None:
            result = [
                expression.empty_result_set_value
                for expression in outer_query.annotation_select.values()
            ]
        else:
            cols = outer_query.annotation_select.values()
            converters = compiler.get_converters(cols)
            rows = compiler.apply_converters((result,), converters)
            if compiler.has_composite_fields(cols):
                rows = compiler.composite_fields_to_tuples(rows, cols)
            result = next(rows)
        return dict(zip(outer_query.annotation_select, result, strict=False))

    async def aaggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Async twin of ``QuerySet.aggregate()``."""
        if self.query.distinct_fields:
            raise NotImplementedError("aggregate() + distinct(fields) not implemented.")
        self._validate_values_are_expressions(
            (*args, *kwargs.values()), method_name="aggregate"
        )
        for arg in args:
            # The default_alias property raises TypeError if default_alias
            # can't be set automatically or AttributeError if it isn't an
            # attribute.
            try:
                arg.default_alias  # noqa: B018
            except (AttributeError, TypeError):
                raise TypeError("Complex aggregates require an alias") from None
            kwargs[arg.default_alias] = arg
        db = self.db
        result: dict[str, Any] = await self._aaggregation(
            lambda: self.query.chain().get_aggregation(db, kwargs)
        )
        return result

    async def acount(self) -> int:
        """Async twin of ``QuerySet.count()`` (and ``Query.get_count()``)."""
        if self._result_cache is not None:
            return len(self._result_cache)
        db = self.db
        result = await self._aaggregation(
            lambda: self.query.clone().get_aggregation(db, {"__count": Count("*")})
        )
        return int(result["__count"])

    # ##### Single objects #####

    async def aget(self, *args: Any, **kwargs: Any) -> Any:
        """Async twin of ``QuerySet.get()``: same SQL, executed on the task's
        connection; Django's ``DoesNotExist``/``MultipleObjectsReturned``."""
        if self.query.combinator and (args or kwargs):
            raise NotSupportedError(
                f"Calling QuerySet.get(...) with filters after "
                f"{self.query.combinator}() is not supported."
            )
        clone = self._chain() if self.query.combinator else self.filter(*args, **kwargs)
        if self.query.can_filter() and not self.query.distinct_fields:
            clone = clone.order_by()
        limit = None
        if (
            not clone.query.select_for_update
            or _features(clone.db).supports_select_for_update_with_limit
        ):
            limit = MAX_GET_RESULTS
            clone.query.set_limits(high=limit)
        await clone._afetch_all()
        num = len(clone._result_cache)
        if num == 1:
            return clone._result_cache[0]
        if not num:
            raise self.model.DoesNotExist(
                f"{self.model._meta.object_name} matching query does not exist."
            )
        raise self.model.MultipleObjectsReturned(
            "get() returned more than one {} -- it returned {}!".format(
                self.model._meta.object_name,
                num if not limit or num < limit else f"more than {limit - 1}",
            )
        )

    async def _aearliest(self, *fields: Any) -> Any:
        """Async twin of ``QuerySet._earliest()``."""
        if fields:
            order_by = fields
        else:
            order_by = self.model._meta.get_latest_by
            if order_by and not isinstance(order_by, (tuple, list)):
                order_by = (order_by,)
        if order_by is None:
            raise ValueError(
                "earliest() and latest() require either fields as positional "
                "arguments or 'get_latest_by' in the model's Meta."
            )
        obj = self._chain()
        obj.query.set_limits(high=1)
        obj.query.clear_ordering(force=True)
        obj.query.add_ordering(*order_by)
        return await obj.aget()

    async def aearliest(self, *fields: Any) -> Any:
        """Async twin of ``QuerySet.earliest()``."""
        if self.query.is_sliced:
            raise TypeError("Cannot change a query once a slice has been taken.")
        return await self._aearliest(*fields)

    async def alatest(self, *fields: Any) -> Any:
        """Async twin of ``QuerySet.latest()``."""
        if self.query.is_sliced:
            raise TypeError("Cannot change a query once a slice has been taken.")
        return await self.reverse()._aearliest(*fields)

    async def afirst(self) -> Any:
        """Async twin of ``QuerySet.first()``."""
        if self.ordered:
            queryset = self
        else:
            self._check_ordering_first_last_queryset_aggregation(method="first")
            queryset = self.order_by("pk")
        async for obj in queryset[:1]:
            return obj
        return None

    async def alast(self) -> Any:
        """Async twin of ``QuerySet.last()``."""
        if self.ordered:
            queryset = self.reverse()
        else:
            self._check_ordering_first_last_queryset_aggregation(method="last")
            queryset = self.order_by("-pk")
        async for obj in queryset[:1]:
            return obj
        return None

    async def ain_bulk(
        self, id_list: Any = None, *, field_name: str = "pk"
    ) -> dict[Any, Any]:
        """Async twin of ``QuerySet.in_bulk()``."""
        if self.query.is_sliced:
            raise TypeError("Cannot use 'limit' or 'offset' with in_bulk().")
        if not issubclass(self._iterable_class, django_query.ModelIterable):
            raise TypeError("in_bulk() cannot be used with values() or values_list().")
        opts = self.model._meta
        unique_fields = [
            constraint.fields[0]
            for constraint in opts.total_unique_constraints
            if len(constraint.fields) == 1
        ]
        if (
            field_name != "pk"
            and not opts.get_field(field_name).unique
            and field_name not in unique_fields
            and self.query.distinct_fields != (field_name,)
        ):
            raise ValueError(
                f"in_bulk()'s field_name must be a unique field but {field_name!r} "
                f"isn't."
            )
        if id_list is not None:
            if not id_list:
                return {}
            filter_key = f"{field_name}__in"
            max_params = _features(self.db).max_query_params or 0
            num_fields = len(opts.pk_fields) if field_name == "pk" else 1
            batch_size = max_params // num_fields
            id_list = tuple(id_list)
            # If the database has a limit on the number of query parameters
            # (e.g. SQLite), retrieve objects in batches if necessary.
            if batch_size and batch_size < len(id_list):
                objs: list[Any] = []
                for offset in range(0, len(id_list), batch_size):
                    batch = id_list[offset : offset + batch_size]
                    objs += [o async for o in self.filter(**{filter_key: batch})]
                return {getattr(obj, field_name): obj for obj in objs}
            qs = self.filter(**{filter_key: id_list})
        else:
            qs = self._chain()
        return {getattr(obj, field_name): obj async for obj in qs}

    async def aexists(self) -> bool:
        """Async twin of ``QuerySet.exists()`` (``Query.has_results()``)."""
        if self._result_cache is None:
            q = self.query.exists()
            compiler = await native_compiler(q, _connection(self.db))
            return bool(await compiler.aexecute_sql(SINGLE))
        return bool(self._result_cache)

    async def acontains(self, obj: Any) -> bool:
        """Async twin of ``QuerySet.contains()``."""
        self._not_support_combined_queries("contains")
        if self._fields is not None:
            raise TypeError(
                "Cannot call QuerySet.contains() after .values() or .values_list()."
            )
        try:
            if obj._meta.concrete_model != self.model._meta.concrete_model:
                return False
        except AttributeError:
            raise TypeError("'obj' must be a model instance.") from None
        if not obj._is_pk_set():
            raise ValueError("QuerySet.contains() cannot be used on unsaved objects.")
        if self._result_cache is not None:
            return bool(obj in self._result_cache)
        return bool(await self.filter(pk=obj.pk).aexists())

    async def aexplain(self, *, format: str | None = None, **options: Any) -> str:
        """Async twin of ``QuerySet.explain()`` (``Query.explain()``)."""
        q = self.query.clone()
        for option_name in options:
            if (
                not _EXPLAIN_OPTIONS_PATTERN.fullmatch(option_name)
                or "--" in option_name
            ):
                raise ValueError(f"Invalid option name: {option_name!r}.")
        q.explain_info = _ExplainInfo(format, options)
        compiler = await native_compiler(q, _connection(self.db))
        return "\n".join([line async for line in compiler.aexplain_query()])

    # ##### Writes #####

    async def acreate(self, **kwargs: Any) -> Any:
        """Async twin of ``QuerySet.create()``: the instance is saved with the
        native ``asave`` (see ``async_db.models.base``)."""
        reverse_one_to_one_fields = frozenset(kwargs).intersection(
            self.model._meta._reverse_one_to_one_field_names
        )
        if reverse_one_to_one_fields:
            raise ValueError(
                "The following fields do not exist in this model: {}".format(
                    ", ".join(reverse_one_to_one_fields)
                )
            )
        obj = self.model(**kwargs)
        self._for_write = True
        await _asave_object(obj, force_insert=True, using=self.db)
        return obj

    acreate.alters_data = True  # type: ignore[attr-defined]

    async def abulk_create(
        self,
        objs: Any,
        batch_size: int | None = None,
        ignore_conflicts: bool = False,
        update_conflicts: bool = False,
        update_fields: Any = None,
        unique_fields: Any = None,
    ) -> list[Any]:
        """Async twin of ``QuerySet.bulk_create()``: primary keys (and other
        returned columns) are set from ``INSERT ... RETURNING``."""
        if batch_size is not None and batch_size <= 0:
            raise ValueError("Batch size must be a positive integer.")
        for parent in self.model._meta.all_parents:
            if parent._meta.concrete_model is not self.model._meta.concrete_model:
                raise ValueError("Can't bulk create a multi-table inherited model")
        if not objs:
            return objs  # type: ignore[no-any-return]
        opts = self.model._meta
        if unique_fields:
            # Primary key is allowed in unique_fields.
            unique_fields = [
                self.model._meta.get_field(opts.pk.name if name == "pk" else name)
                for name in unique_fields
            ]
        if update_fields:
            update_fields = [self.model._meta.get_field(name) for name in update_fields]
        conn = _connection(self.db)
        on_conflict = run_native(
            conn,
            self._check_bulk_create_options,
            ignore_conflicts,
            update_conflicts,
            update_fields,
            unique_fields,
        )
        self._for_write = True
        fields = [f for f in opts.concrete_fields if not f.generated]
        objs = list(objs)
        run_native(conn, self._prepare_for_bulk_create, objs)
        async with async_atomic(using=self.db, savepoint=False):
            objs_without_pk, objs_with_pk = partition(lambda o: o._is_pk_set(), objs)
            if objs_with_pk:
                returned_columns = await self._abatched_insert(
                    objs_with_pk,
                    fields,
                    batch_size,
                    on_conflict=on_conflict,
                    update_fields=update_fields,
                    unique_fields=unique_fields,
                )
                for obj_with_pk, results in zip(
                    objs_with_pk, returned_columns, strict=False
                ):
                    for result, field in zip(
                        results, opts.db_returning_fields, strict=False
                    ):
                        if field != opts.pk:
                            setattr(obj_with_pk, field.attname, result)
                for obj_with_pk in objs_with_pk:
                    obj_with_pk._state.adding = False
                    obj_with_pk._state.db = self.db
            if objs_without_pk:
                fields = [f for f in fields if not isinstance(f, AutoField)]
                returned_columns = await self._abatched_insert(
                    objs_without_pk,
                    fields,
                    batch_size,
                    on_conflict=on_conflict,
                    update_fields=update_fields,
                    unique_fields=unique_fields,
                )
                if (
                    _features(self.db).can_return_rows_from_bulk_insert
                    and on_conflict is None
                ):
                    assert len(returned_columns) == len(objs_without_pk)
                for obj_without_pk, results in zip(
                    objs_without_pk, returned_columns, strict=False
                ):
                    for result, field in zip(
                        results, opts.db_returning_fields, strict=False
                    ):
                        setattr(obj_without_pk, field.attname, result)
                    obj_without_pk._state.adding = False
                    obj_without_pk._state.db = self.db
        return objs  # type: ignore[no-any-return]

    abulk_create.alters_data = True  # type: ignore[attr-defined]

    async def abulk_update(
        self, objs: Any, fields: Any, batch_size: int | None = None
    ) -> int:
        """Async twin of ``QuerySet.bulk_update()``."""
        if batch_size is not None and batch_size <= 0:
            raise ValueError("Batch size must be a positive integer.")
        if not fields:
            raise ValueError("Field names must be given to bulk_update().")
        objs = tuple(objs)
        if not all(obj._is_pk_set() for obj in objs):
            raise ValueError("All bulk_update() objects must have a primary key set.")
        opts = self.model._meta
        fields = [opts.get_field(name) for name in fields]
        if any(not f.concrete or f.many_to_many for f in fields):
            raise ValueError("bulk_update() can only be used with concrete fields.")
        all_pk_fields = set(opts.pk_fields)
        for parent in opts.all_parents:
            all_pk_fields.update(parent._meta.pk_fields)
        if any(f in all_pk_fields for f in fields):
            raise ValueError("bulk_update() cannot be used with primary key fields.")
        if not objs:
            return 0
        for obj in objs:
            obj._prepare_related_fields_for_save(
                operation_name="bulk_update", fields=fields
            )
        # PK is used twice in the resulting update query, once in the filter
        # and once in the WHEN. Each field will also have one CAST.
        self._for_write = True
        connection = compile_connection(_connection(self.db))
        max_batch_size = connection.ops.bulk_batch_size(
            [opts.pk, opts.pk, *fields], objs
        )
        batch_size = min(batch_size, max_batch_size) if batch_size else max_batch_size
        requires_casting = connection.features.requires_casted_case_in_updates
        batches = (objs[i : i + batch_size] for i in range(0, len(objs), batch_size))
        updates = []
        for batch_objs in batches:
            update_kwargs = {}
            for field in fields:
                when_statements = []
                for obj in batch_objs:
                    attr = getattr(obj, field.attname)
                    if not hasattr(attr, "resolve_expression"):
                        attr = Value(attr, output_field=field)
                    when_statements.append(When(pk=obj.pk, then=attr))
                case_statement: Any = Case(*when_statements, output_field=field)
                if requires_casting:
                    case_statement = Cast(case_statement, output_field=field)
                update_kwargs[field.attname] = case_statement
            updates.append(([obj.pk for obj in batch_objs], update_kwargs))
        rows_updated = 0
        queryset = self.using(self.db)
        async with async_atomic(using=self.db, savepoint=False):
            for pks, update_kwargs in updates:
                rows_updated += await queryset.filter(pk__in=pks).aupdate(
                    **update_kwargs
                )
        return rows_updated

    abulk_update.alters_data = True  # type: ignore[attr-defined]

    async def aget_or_create(
        self, defaults: Any = None, **kwargs: Any
    ) -> tuple[Any, bool]:
        """Async twin of ``QuerySet.get_or_create()``: the create runs in a
        savepoint (``async_atomic(using=self.db)``); on ``IntegrityError`` the
        get is retried, as Django does."""
        # The get() needs to be targeted at the write database in order
        # to avoid potential transaction consistency problems.
        self._for_write = True
        try:
            return await self.aget(**kwargs), False
        except self.model.DoesNotExist:
            params = self._extract_model_params(defaults, **kwargs)
            # Try to create an object using passed params.
            try:
                async with async_atomic(using=self.db):
                    params = dict(resolve_callables(params))
                    return await self.acreate(**params), True
            except IntegrityError:
                try:
                    return await self.aget(**kwargs), False
                except self.model.DoesNotExist:
                    pass
                raise

    aget_or_create.alters_data = True  # type: ignore[attr-defined]

    async def aupdate_or_create(
        self, defaults: Any = None, create_defaults: Any = None, **kwargs: Any
    ) -> tuple[Any, bool]:
        """Async twin of ``QuerySet.update_or_create()``: the row is locked
        with ``select_for_update()`` inside ``async_atomic(using=self.db)``."""
        update_defaults = defaults or {}
        if create_defaults is None:
            create_defaults = update_defaults
        self._for_write = True
        async with async_atomic(using=self.db):
            # Lock the row so that a concurrent update is blocked until
            # update_or_create() has performed its save.
            obj, created = await self.select_for_update().aget_or_create(
                create_defaults, **kwargs
            )
            if created:
                return obj, created
            for k, v in resolve_callables(update_defaults):
                setattr(obj, k, v)
            update_fields = set(update_defaults)
            concrete_field_names = self.model._meta._non_pk_concrete_field_names
            # update_fields does not support non-concrete fields.
            if concrete_field_names.issuperset(update_fields):
                # Add fields which are set on pre_save(), e.g. auto_now fields.
                pk_fields = self.model._meta.pk_fields
                for field in self.model._meta.local_concrete_fields:
                    if not (
                        field in pk_fields or field.__class__.pre_save is Field.pre_save
                    ):
                        update_fields.add(field.name)
                        if field.name != field.attname:
                            update_fields.add(field.attname)
                await _asave_object(obj, using=self.db, update_fields=update_fields)
            else:
                await _asave_object(obj, using=self.db)
        return obj, False

    aupdate_or_create.alters_data = True  # type: ignore[attr-defined]

    async def adelete(self) -> tuple[int, dict[str, int]]:
        """Async twin of ``QuerySet.delete()``: Django's ``Collector``
        collects and deletes natively (``async_db.models.deletion``), every
        ``on_delete`` included, in one transaction; returns Django's
        ``(total, {model label: count})``."""
        from async_db.models.deletion import Collector

        self._not_support_combined_queries("delete")
        if self.query.is_sliced:
            raise TypeError("Cannot use 'limit' or 'offset' with delete().")
        if self.query.distinct_fields:
            raise TypeError("Cannot call delete() after .distinct(*fields).")
        if self._fields is not None:
            raise TypeError("Cannot call delete() after .values() or .values_list()")
        del_query = self._chain()
        # The delete is actually 2 queries - one to find related objects,
        # and one to delete. Make sure that the discovery of related
        # objects is performed on the same database as the deletion.
        del_query._for_write = True
        # Disable non-supported fields.
        del_query.query.select_for_update = False
        del_query.query.select_related = False
        del_query.query.clear_ordering(force=True)
        collector = Collector(using=del_query.db, origin=self)
        await collector.acollect(del_query)
        num_deleted, num_deleted_per_model = await collector.adelete()
        # Clear the result cache, in case this QuerySet gets reused.
        self._result_cache = None
        return num_deleted, num_deleted_per_model

    adelete.alters_data = True  # type: ignore[attr-defined]
    adelete.queryset_only = True  # type: ignore[attr-defined]

    async def _araw_delete(self, using: str) -> int:
        """Async twin of ``QuerySet._raw_delete()``."""
        query = self.query.clone()
        query.__class__ = sql.DeleteQuery
        compiler = await native_compiler(query, _connection(using))
        return int(await compiler.aexecute_sql(ROW_COUNT))

    async def aupdate(self, **kwargs: Any) -> int:
        """Async twin of ``QuerySet.update()``."""
        self._not_support_combined_queries("update")
        if self.query.is_sliced:
            raise TypeError("Cannot update a query once a slice has been taken.")
        self._for_write = True
        query = self.query.chain(sql.UpdateQuery)
        query.add_update_values(kwargs)
        # Inline annotations in order_by(), if possible.
        new_order_by = []
        for col in query.order_by:
            alias = col
            descending = False
            if isinstance(alias, str) and alias.startswith("-"):
                alias = alias.removeprefix("-")
                descending = True
            if annotation := query.annotations.get(alias):
                if getattr(annotation, "contains_aggregate", False):
                    raise exceptions.FieldError(
                        f"Cannot update when ordering by an aggregate: {annotation}"
                    )
                if descending:
                    annotation = annotation.desc()
                new_order_by.append(annotation)
            else:
                new_order_by.append(col)
        query.order_by = tuple(new_order_by)
        # Clear SELECT clause as all annotation references were inlined by
        # add_update_values() already.
        query.clear_select_clause()
        async with mark_for_rollback_on_error(using=self.db):
            compiler = await native_compiler(query, _connection(self.db))
            rows = await compiler.aexecute_sql(ROW_COUNT)
        self._result_cache = None
        return int(rows)

    aupdate.alters_data = True  # type: ignore[attr-defined]

    async def _aupdate(self, values: Any) -> int:
        """Async twin of ``QuerySet._update()`` (model saves)."""
        if self.query.is_sliced:
            raise TypeError("Cannot update a query once a slice has been taken.")
        query = self.query.chain(sql.UpdateQuery)
        query.add_update_fields(values)
        # Clear any annotations so that they won't be present in subqueries.
        query.annotations = {}
        self._result_cache = None
        compiler = await native_compiler(query, _connection(self.db))
        return int(await compiler.aexecute_sql(ROW_COUNT))

    async def _ainsert(
        self,
        objs: Any,
        fields: Any,
        returning_fields: Any = None,
        raw: bool = False,
        using: str | None = None,
        on_conflict: Any = None,
        update_fields: Any = None,
        unique_fields: Any = None,
    ) -> list[Any]:
        """Async twin of ``QuerySet._insert()``."""
        self._for_write = True
        if using is None:
            using = self.db
        query = sql.InsertQuery(
            self.model,
            on_conflict=on_conflict,
            update_fields=update_fields,
            unique_fields=unique_fields,
        )
        query.insert_values(fields, objs, raw=raw)
        compiler = await native_compiler(query, _connection(using))
        result: list[Any] = await compiler.aexecute_sql(returning_fields)
        return result

    async def _abatched_insert(
        self,
        objs: list[Any],
        fields: list[Any],
        batch_size: int | None,
        on_conflict: Any = None,
        update_fields: Any = None,
        unique_fields: Any = None,
    ) -> list[Any]:
        """Async twin of ``QuerySet._batched_insert()``."""
        connection = compile_connection(_connection(self.db))
        ops = connection.ops
        max_batch_size = max(ops.bulk_batch_size(fields, objs), 1)
        batch_size = min(batch_size, max_batch_size) if batch_size else max_batch_size
        inserted_rows: list[Any] = []
        bulk_return = connection.features.can_return_rows_from_bulk_insert
        for item in [objs[i : i + batch_size] for i in range(0, len(objs), batch_size)]:
            if bulk_return and (
                on_conflict is None or on_conflict == OnConflict.UPDATE
            ):
                inserted_rows.extend(
                    await self._ainsert(
                        item,
                        fields=fields,
                        using=self.db,
                        on_conflict=on_conflict,
                        update_fields=update_fields,
                        unique_fields=unique_fields,
                        returning_fields=self.model._meta.db_returning_fields,
                    )
                )
            else:
                await self._ainsert(
                    item,
                    fields=fields,
                    using=self.db,
                    on_conflict=on_conflict,
                    update_fields=update_fields,
                    unique_fields=unique_fields,
                )
        return inserted_rows


class AsyncRawQuerySet(_RawQuerySet):  # type: ignore[misc]
    """``Model.objects.raw()`` of an ``AsyncQuerySet``: sync iteration is
    Django's; ``async for`` runs the query natively on the task's connection
    (Django's would run ``_fetch_all()`` in a thread)."""

    _result_cache: list[Any] | None
    _prefetch_done: bool

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        """Async twin of ``RawQuerySet.__aiter__()``: fills the result cache
        natively, then yields from it."""

        async def generator() -> AsyncGenerator[Any, None]:
            await self._afetch_all()
            for item in self._result_cache or ():
                yield item

        return generator()

    async def _afetch_all(self) -> None:
        """Async twin of ``RawQuerySet._fetch_all()``: the rows, then the
        ``prefetch_related()`` lookups (:func:`aprefetch_related_objects`)."""
        if self._result_cache is None:
            self._result_cache = await _araw_model_instances(self)
        if self._prefetch_related_lookups and not self._prefetch_done:
            await aprefetch_related_objects(
                self._result_cache, *self._prefetch_related_lookups
            )
            self._prefetch_done = True


def _raw_params(query: Any, connection: Any) -> Any:
    """The parameter adaptation of ``RawQuery._execute_query()``."""
    # Adapt parameters to the database, as much as possible considering
    # that the target type isn't known. See #17755.
    params_type = query.params_type
    adapter = connection.ops.adapt_unknown_value
    if params_type is tuple:
        return tuple(adapter(val) for val in query.params)
    if params_type is dict:
        return {key: adapter(val) for key, val in query.params.items()}
    if params_type is None:
        return None
    raise RuntimeError(f"Unexpected params type: {params_type}")


class _RawDescription:
    """Stands for ``RawQuery.cursor`` while Django reads the columns
    (``RawQuery.get_columns()`` reads only ``cursor.description``)."""

    def __init__(self, description: Any) -> None:
        self.description = description


async def _araw_model_instances(queryset: Any) -> list[Any]:
    """Async twin of ``RawModelIterable.__iter__()`` (with ``RawQuery.
    __iter__()``/``_execute_query()``): the query runs on the task's
    connection (``async_connections[query.using]``), all rows are fetched
    (Django fills the result cache anyway), then Django's column resolution,
    converters and ``Model.from_db``, unchanged."""
    db = queryset.db
    query = queryset.query
    conn = _connection(query.using)
    connection = compile_connection(conn)
    params = run_native(conn, _raw_params, query, connection)
    async with conn.cursor() as cursor:
        await cursor.execute(query.sql, params)
        description = cursor.description
        rows = await cursor.fetchall()
    return run_native(_connection(db), _raw_instances, queryset, db, description, rows)


def _raw_instances(queryset: Any, db: str, description: Any, rows: Any) -> list[Any]:
    """The body of ``RawModelIterable.__iter__()`` after the query ran."""
    from django.db import connections

    query = queryset.query
    connection = connections[db]
    compiler = connection.ops.compiler("SQLCompiler")(query, connection, db)
    query_iterator = iter(rows)
    query.cursor = _RawDescription(description)
    try:
        (
            model_init_names,
            model_init_pos,
            annotation_fields,
        ) = queryset.resolve_model_init_order()
    finally:
        # Django leaves its (closed) cursor here; the description was all
        # Django needed from it.
        query.cursor = None
    model_cls = queryset.model
    if model_cls._meta.pk.attname not in model_init_names:
        raise exceptions.FieldDoesNotExist("Raw query must include the primary key")
    fields = [queryset.model_fields.get(c) for c in queryset.columns]
    cols: list[Any] = [f.get_col(f.model._meta.db_table) if f else None for f in fields]
    converters = compiler.get_converters(cols)
    if converters:
        query_iterator = compiler.apply_converters(query_iterator, converters)
    if compiler.has_composite_fields(cols):
        query_iterator = compiler.composite_fields_to_tuples(query_iterator, cols)
    instances = []
    for values in query_iterator:
        # Associate fields to values
        model_init_values = [values[pos] for pos in model_init_pos]
        instance = model_cls.from_db(db, model_init_names, model_init_values)
        if annotation_fields:
            for column, pos in annotation_fields:
                setattr(instance, column, values[pos])
        instances.append(instance)
    return instances


def _features(alias: str) -> Any:
    """The alias's backend features, without a sync connection."""
    return compile_connection(_connection(alias)).features


async def _asave_object(obj: Any, **kwargs: Any) -> None:
    from async_db.models.base import asave_object

    await asave_object(obj, **kwargs)


@functools.cache
def async_queryset_class(queryset_class: type) -> type[AsyncQuerySet]:
    """``queryset_class`` with native async methods: itself if it already
    derives from :class:`AsyncQuerySet`, else a subclass of both (its own
    methods kept; the async methods are async-db's)."""
    if issubclass(queryset_class, AsyncQuerySet):
        return queryset_class
    if queryset_class is django_query.QuerySet:
        return AsyncQuerySet
    return type(
        f"Async{queryset_class.__name__}",
        (AsyncQuerySet, queryset_class),
        {"__module__": queryset_class.__module__},
    )


@overload
def native(obj: Model) -> NativeInstance: ...


@overload
def native(obj: Any) -> AsyncQuerySet: ...


def native(obj: Any) -> AsyncQuerySet | NativeInstance:
    """The same query as an :class:`AsyncQuerySet`, for models you don't own:
    ``await native(User.objects.filter(is_active=True)).acount()``. Accepts a
    queryset, a manager or a model class (its default manager); given a model
    instance, its native ``asave()``/``adelete()``/``arefresh_from_db()``
    acting on that instance (``async_db.models.base.NativeInstance``):
    ``await native(user).asave(update_fields=["last_login"])``."""
    from django.db.models.manager import BaseManager

    if isinstance(obj, AsyncQuerySet):
        return obj
    if isinstance(obj, django_query.QuerySet):
        clone: Any = obj
        clone = clone._chain()
        clone.__class__ = async_queryset_class(type(obj))
        return clone  # type: ignore[no-any-return]
    if isinstance(obj, BaseManager):
        return native(obj.get_queryset())
    if isinstance(obj, type) and issubclass(obj, Model):
        return native(obj._default_manager.all())
    if isinstance(obj, Model):
        from async_db.models.base import NativeInstance

        return NativeInstance(obj)
    raise TypeError(
        f"native() takes a QuerySet, a Manager, a model class or a model "
        f"instance, not {type(obj).__name__}."
    )


# ##### prefetch_related (issue 12) #####

# Django's no-I/O helpers of prefetch_related_objects(), reused as they are.
_normalize_prefetch_lookups: Any = django_query.normalize_prefetch_lookups
_get_prefetcher: Any = django_query.get_prefetcher


async def aprefetch_related_objects(
    model_instances: Any, *related_lookups: Any
) -> None:
    """Async twin of Django's ``prefetch_related_objects()`` (replaces
    Django's ``aprefetch_related_objects``, which runs it in a thread).

    Populate prefetched object caches for a list of model instances based on
    the lookups/Prefetch instances given: Django's walk of the lookups, its
    ``get_prefetcher()`` and ``Prefetch`` objects, with each level's query
    evaluated natively on the task's connection (see
    :func:`_aprefetch_one_level`). Fills exactly Django's caches:
    ``_prefetched_objects_cache``, ``to_attr`` lists and ``fields_cache``."""
    from django.db.models.constants import LOOKUP_SEP

    from async_db.models.fields.related_descriptors import awarm_content_types

    if not model_instances:
        return  # nothing to do

    # We need to be able to dynamically add to the list of prefetch_related
    # lookups that we look up (see below).  So we need some book keeping to
    # ensure we don't do duplicate work.
    done_queries: dict[str, Any] = {}  # things like 'foo__bar': [results]

    auto_lookups: set[Any] = set()  # we add to this as we go through.
    followed_descriptors: set[Any] = set()  # recursion protection

    all_lookups = _normalize_prefetch_lookups(reversed(related_lookups))
    while all_lookups:
        lookup = all_lookups.pop()
        if lookup.prefetch_to in done_queries:
            if lookup.queryset is not None:
                raise ValueError(
                    f"'{lookup.prefetch_to}' lookup was already seen with a "
                    f"different queryset. You may need to adjust the ordering "
                    f"of your lookups."
                )

            continue

        # Top level, the list of objects to decorate is the result cache
        # from the primary QuerySet. It won't be for deeper levels.
        obj_list = model_instances

        through_attrs = lookup.prefetch_through.split(LOOKUP_SEP)
        for level, through_attr in enumerate(through_attrs):
            # Prepare main instances
            if not obj_list:
                break

            prefetch_to = lookup.get_current_prefetch_to(level)
            if prefetch_to in done_queries:
                # Skip any prefetching, and any object preparation
                obj_list = done_queries[prefetch_to]
                continue

            # Prepare objects:
            good_objects = True
            for obj in obj_list:
                # Since prefetching can re-use instances, it is possible to have
                # the same instance multiple times in obj_list, so obj might
                # already be prepared.
                if not hasattr(obj, "_prefetched_objects_cache"):
                    try:
                        obj._prefetched_objects_cache = {}
                    except (AttributeError, TypeError):
                        # Must be an immutable object from
                        # values_list(flat=True), for example (TypeError) or
                        # a QuerySet subclass that isn't returning Model
                        # instances (AttributeError), either in Django or a 3rd
                        # party. prefetch_related() doesn't make sense, so quit.
                        good_objects = False
                        break
            if not good_objects:
                break

            # Descend down tree

            # We assume that objects retrieved are homogeneous (which is the premise
            # of prefetch_related), so what applies to first object applies to all.
            first_obj = obj_list[0]
            to_attr = lookup.get_current_to_attr(level)[0]
            # A GenericRelation's manager looks its content type up when it
            # is built (here and when the caches are set): read it natively.
            await awarm_content_types(
                getattr(first_obj.__class__, through_attr, None), obj_list
            )
            prefetcher, descriptor, attr_found, is_fetched = _get_prefetcher(
                first_obj, through_attr, to_attr
            )

            if not attr_found:
                raise AttributeError(
                    f"Cannot find '{through_attr}' on "
                    f"{first_obj.__class__.__name__} object, "
                    f"'{lookup.prefetch_through}' is an invalid parameter to "
                    f"prefetch_related()"
                )

            if level == len(through_attrs) - 1 and prefetcher is None:
                # Last one, this *must* resolve to something that supports
                # prefetching, otherwise there is no point adding it and the
                # developer asking for it has made a mistake.
                raise ValueError(
                    f"'{lookup.prefetch_through}' does not resolve to an item "
                    f"that supports prefetching - this is an invalid parameter "
                    f"to prefetch_related()."
                )

            obj_to_fetch = None
            if prefetcher is not None:
                obj_to_fetch = [obj for obj in obj_list if not is_fetched(obj)]

            if obj_to_fetch:
                obj_list, additional_lookups = await _aprefetch_one_level(
                    obj_to_fetch,
                    prefetcher,
                    lookup,
                    level,
                )
                # We need to ensure we don't keep adding lookups from the
                # same relationships to stop infinite recursion. So, if we
                # are already on an automatically added lookup, don't add
                # the new lookups from relationships we've seen already.
                if not (
                    prefetch_to in done_queries
                    and lookup in auto_lookups
                    and descriptor in followed_descriptors
                ):
                    done_queries[prefetch_to] = obj_list
                    new_lookups = _normalize_prefetch_lookups(
                        reversed(additional_lookups), prefetch_to
                    )
                    auto_lookups.update(new_lookups)
                    all_lookups.extend(new_lookups)
                followed_descriptors.add(descriptor)
            else:
                # Either a singly related object that has already been fetched
                # (e.g. via select_related), or hopefully some other property
                # that doesn't support prefetching but needs to be traversed.

                # We replace the current list of parent objects with the list
                # of related objects, filtering out empty or missing values so
                # that we can continue with nullable or reverse relations.
                new_obj_list = []
                for obj in obj_list:
                    new_obj: Any
                    if through_attr in getattr(obj, "_prefetched_objects_cache", ()):
                        # If related objects have been prefetched, use the
                        # cache rather than the object's through_attr.
                        new_obj = list(obj._prefetched_objects_cache.get(through_attr))
                    else:
                        try:
                            new_obj = getattr(obj, through_attr)
                        except exceptions.ObjectDoesNotExist:
                            continue
                    if new_obj is None:
                        continue
                    # We special-case `list` rather than something more generic
                    # like `Iterable` because we don't want to accidentally match
                    # user models that define __iter__.
                    if isinstance(new_obj, list):
                        new_obj_list.extend(new_obj)
                    else:
                        new_obj_list.append(new_obj)
                obj_list = new_obj_list


async def _aprefetch_one_level(
    instances: list[Any], prefetcher: Any, lookup: Any, level: int
) -> tuple[list[Any], list[Any]]:
    """Async twin of Django's ``prefetch_one_level()``: the related queryset
    comes from ``aget_prefetch_querysets()`` (Django's
    ``get_prefetch_querysets()``, evaluated natively) and is evaluated on
    the task's connection; the caches are assigned as Django assigns them.

    Return the prefetched objects along with any additional prefetches that
    must be done due to prefetch_related lookups found from default managers.
    """
    import copy

    from django.db.models.constants import LOOKUP_SEP

    from async_db.models.fields.related_descriptors import (
        afetch_all,
        aget_prefetch_querysets,
    )

    (
        rel_qs,
        rel_obj_attr,
        instance_attr,
        single,
        cache_name,
        is_descriptor,
    ) = await aget_prefetch_querysets(
        prefetcher, instances, lookup.get_current_querysets(level)
    )
    # We have to handle the possibility that the QuerySet we just got back
    # contains some prefetch_related lookups. We don't want to trigger the
    # prefetch_related functionality by evaluating the query. Rather, we need
    # to merge in the prefetch_related lookups.
    # Copy the lookups in case it is a Prefetch object which could be reused
    # later (happens in nested prefetch_related).
    additional_lookups = [
        copy.copy(additional_lookup)
        for additional_lookup in getattr(rel_qs, "_prefetch_related_lookups", ())
    ]
    if additional_lookups:
        # Don't need to clone because the manager should have given us a fresh
        # instance, so we access an internal instead of using public interface
        # for performance reasons.
        rel_qs._prefetch_related_lookups = ()

    if isinstance(rel_qs, django_query.QuerySet):
        await afetch_all(rel_qs)
    all_related_objects = list(rel_qs)

    rel_obj_cache: dict[Any, list[Any]] = {}
    for rel_obj in all_related_objects:
        rel_attr_val = rel_obj_attr(rel_obj)
        rel_obj_cache.setdefault(rel_attr_val, []).append(rel_obj)

    to_attr, as_attr = lookup.get_current_to_attr(level)
    # Make sure `to_attr` does not conflict with a field.
    if as_attr and instances:
        # We assume that objects retrieved are homogeneous (which is the premise
        # of prefetch_related), so what applies to first object applies to all.
        model = instances[0].__class__
        try:
            model._meta.get_field(to_attr)
        except exceptions.FieldDoesNotExist:
            pass
        else:
            msg = "to_attr={} conflicts with a field on the {} model."
            raise ValueError(msg.format(to_attr, model.__name__))

    # Whether or not we're prefetching the last part of the lookup.
    leaf = len(lookup.prefetch_through.split(LOOKUP_SEP)) - 1 == level

    for obj in instances:
        instance_attr_val = instance_attr(obj)
        vals = rel_obj_cache.get(instance_attr_val, [])

        if single:
            val = vals[0] if vals else None
            if as_attr:
                # A to_attr has been given for the prefetch.
                setattr(obj, to_attr, val)
            elif is_descriptor:
                # cache_name points to a field name in obj.
                # This field is a descriptor for a related object.
                setattr(obj, cache_name, val)
            else:
                # No to_attr has been given for this prefetch operation and the
                # cache_name does not point to a descriptor. Store the value of
                # the field in the object's field cache.
                obj._state.fields_cache[cache_name] = val
        else:
            if as_attr:
                setattr(obj, to_attr, vals)
            else:
                manager = getattr(obj, to_attr)
                if leaf and lookup.queryset is not None:
                    qs = manager._apply_rel_filters(lookup.queryset)
                else:
                    qs = manager.get_queryset()
                qs._result_cache = vals
                # We don't want the individual qs doing prefetch_related now,
                # since we have merged this into the current work.
                qs._prefetch_done = True
                obj._prefetched_objects_cache[cache_name] = qs
    return all_related_objects, additional_lookups
