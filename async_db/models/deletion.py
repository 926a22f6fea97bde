"""Native deletes: Django's ``Collector`` with its queries awaited.

Read this file beside ``django/db/models/deletion.py``. :class:`Collector`
subclasses Django's ``Collector`` and keeps every method that does no I/O
(``add``, ``add_dependency``, ``add_field_update``, ``add_restricted_objects``,
``clear_restricted_objects_from_set``, ``can_fast_delete``,
``instances_with_model``, ``sort``). The methods that query have async twins,
ported branch for branch in Django's order:

- ``collect()`` -> :meth:`Collector.acollect`: the sub-querysets Django
  evaluates (``if sub_objs:``, ``add(objs)``, a parent link whose fields were
  deferred, ``clear_restricted_objects_from_queryset``, a generic relation's
  content type) are evaluated natively;
- ``delete()`` -> :meth:`Collector.adelete`: pre/post_delete signals through
  ``async_db.models.signals.asend``, fast deletes, field updates
  (``SET_NULL``, ``SET_DEFAULT``, ``SET(...)``) and batch deletes executed on
  the task's connection, in one ``async_atomic(using=..., savepoint=False)``
  (Django's ``transaction.atomic``), with ``mark_for_rollback_on_error`` on the
  single-object fast path, as Django.

``on_delete`` handlers are Django's own functions (``CASCADE``, ``PROTECT``,
``RESTRICT``, ``SET_NULL``, ``SET_DEFAULT``, ``SET(...)``, ``DO_NOTHING``, and
custom ones), called synchronously as Django calls them. ``CASCADE`` calls
``collector.collect(...)``: during a handler call, :meth:`Collector.collect`
*records* the request, and ``acollect`` awaits the recorded sub-collections
right after the handler returns, still inside Django's ``try`` that turns a
nested ``ProtectedError`` into the caller's, so the collection order (and with
it the delete order, the signal order and the errors) is Django's. The one
difference, invisible on PostgreSQL: a handler that calls
``collector.collect()`` and then ``add_field_update()`` (Django's ``CASCADE`` on
a nullable field, only for backends that cannot defer constraint checks) has
its field update recorded before the sub-collection's own.

A handler runs with ``connections[alias]`` swapped to the compile connection
(``run_native``): one that queries (``SET(callable)`` whose callable reads the
database, such as the ``get_sentinel_user`` of Django's docs) cannot reach a
sync connection and raises ``NotSupportedError`` naming the field, before any
row is deleted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from functools import reduce
from itertools import chain
from operator import attrgetter, or_
from typing import Any

from django.core.exceptions import SynchronousOnlyOperation
from django.db import NotSupportedError, models
from django.db.models import signals, sql
from django.db.models.deletion import (
    DO_NOTHING,
    ProtectedError,
    RestrictedError,
    get_candidate_relations_to_delete,
)
from django.db.models.deletion import Collector as DjangoCollector
from django.db.models.sql.constants import (
    GET_ITERATOR_CHUNK_SIZE,
    NO_RESULTS,
    ROW_COUNT,
)

from async_db.contrib.contenttypes import aget_for_model
from async_db.models.query import native
from async_db.models.signals import asend
from async_db.models.sql.compile_connection import run_native
from async_db.models.sql.compiler import Deferred, native_compiler
from async_db.transaction import async_atomic, mark_for_rollback_on_error

__all__ = ["Collector", "adelete_batch", "aupdate_batch"]


def _connection(alias: str) -> Any:
    from async_db import async_connections

    return async_connections[alias]


_Collector: Any = DjangoCollector


def _candidate_relations(opts: Any) -> Any:
    """Django's ``get_candidate_relations_to_delete()`` (typed loosely)."""
    return get_candidate_relations_to_delete(opts)


class Collector(_Collector):  # type: ignore[misc]
    """Django's ``Collector`` with native :meth:`acollect` and :meth:`adelete`
    (the twins of ``collect()`` and ``delete()``). The sync ``collect()`` may
    only be called by an ``on_delete`` handler during :meth:`acollect` (it
    records the request); the sync ``delete()`` is refused."""

    def __init__(self, using: str, origin: Any = None) -> None:
        super().__init__(using, origin=origin)
        #: The ``collect()`` calls of the running on_delete handler.
        self._requests: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] | None = None

    # ##### No I/O: Django's, with the connection lookups made native #####

    def collect(self, objs: Any, *args: Any, **kwargs: Any) -> None:
        """Record a sub-collection asked for by an ``on_delete`` handler (such
        as ``CASCADE``); :meth:`acollect` awaits it when the handler returns."""
        if self._requests is None:
            raise NotSupportedError(
                "async_db.models.deletion.Collector collects natively: call "
                "'await collector.acollect(...)', not collect()."
            )
        self._requests.append((objs, args, kwargs))

    def delete(self) -> Any:
        raise NotSupportedError(
            "async_db.models.deletion.Collector deletes natively: call "
            "'await collector.adelete()', not delete()."
        )

    def get_del_batches(self, objs: Any, fields: Any) -> Any:
        """Django's ``get_del_batches()``, its ``connections[using].ops`` being
        the compile connection's (no sync connection)."""
        return run_native(
            _connection(self.using), super().get_del_batches, objs, fields
        )

    def related_objects(
        self, related_model: Any, related_fields: Any, objs: Any
    ) -> Any:
        """Django's ``related_objects()`` as an ``AsyncQuerySet``."""
        return native(super().related_objects(related_model, related_fields, objs))

    # ##### The async twins of the methods that query #####

    async def aclear_restricted_objects_from_queryset(
        self, model: Any, qs: Any
    ) -> None:
        """Async twin of ``Collector.clear_restricted_objects_from_queryset()``."""
        if model in self.restricted_objects:
            objs = {
                obj
                async for obj in native(qs).filter(
                    pk__in=[
                        obj.pk
                        for objs in self.restricted_objects[model].values()
                        for obj in objs
                    ]
                )
            }
            self.clear_restricted_objects_from_set(model, objs)

    async def acollect(
        self,
        objs: Any,
        source: Any = None,
        nullable: bool = False,
        collect_related: bool = True,
        source_attr: str | None = None,
        reverse_dependency: bool = False,
        keep_parents: bool = False,
        fail_on_restricted: bool = True,
    ) -> None:
        """Async twin of ``Collector.collect()`` (same arguments): add ``objs``
        (model instances, or a queryset, evaluated natively) and, following
        each relation's ``on_delete``, everything their deletion implies.
        Raises Django's ``ProtectedError``/``RestrictedError`` (same messages,
        same ``protected_objects``/``restricted_objects``) before any write."""
        if self.can_fast_delete(objs):
            self.fast_deletes.append(objs)
            return
        await _aevaluate(objs)
        new_objs = self.add(
            objs, source, nullable, reverse_dependency=reverse_dependency
        )
        if not new_objs:
            return

        model = new_objs[0].__class__

        if not keep_parents:
            # Recursively collect concrete model's parent models, but not their
            # related objects. These will be found by meta.get_fields()
            concrete_model = model._meta.concrete_model
            for ptr in concrete_model._meta.parents.values():
                if ptr:
                    parent_objs = [await _aparent(obj, ptr) for obj in new_objs]
                    await self.acollect(
                        parent_objs,
                        source=model,
                        source_attr=ptr.remote_field.related_name,
                        collect_related=False,
                        reverse_dependency=True,
                        fail_on_restricted=False,
                    )
        if not collect_related:
            return

        model_fast_deletes: defaultdict[Any, list[Any]] = defaultdict(list)
        protected_objects: defaultdict[str, list[Any]] = defaultdict(list)
        related: Any
        for related in get_candidate_relations_to_delete(model._meta):
            # Preserve parent reverse relationships if keep_parents=True.
            if keep_parents and related.model in model._meta.all_parents:
                continue
            field = related.field
            on_delete = field.remote_field.on_delete
            if on_delete == DO_NOTHING:
                continue
            related_model = related.related_model
            if self.can_fast_delete(related_model, from_field=field):
                model_fast_deletes[related_model].append(field)
                continue
            batches = self.get_del_batches(new_objs, [field])
            for batch in batches:
                sub_objs = self.related_objects(related_model, [field], batch)
                # Non-referenced fields can be deferred if no signal receivers
                # are connected for the related model as they'll never be
                # exposed to the user. Skip field deferring when some
                # relationships are select_related as interactions between both
                # features are hard to get right. This should only happen in
                # the rare cases where .related_objects is overridden anyway.
                if not (
                    sub_objs.query.select_related
                    or self._has_signal_listeners(related_model)
                ):
                    referenced_fields = set(
                        chain.from_iterable(
                            (rf.attname for rf in rel.field.foreign_related_fields)
                            for rel in _candidate_relations(related_model._meta)
                        )
                    )
                    sub_objs = sub_objs.only(*tuple(referenced_fields))
                if getattr(on_delete, "lazy_sub_objs", False) or await _abool(sub_objs):
                    try:
                        await self._aon_delete(on_delete, field, sub_objs)
                    except ProtectedError as error:
                        key = f"'{field.model.__name__}.{field.name}'"
                        protected_objects[key] += error.protected_objects
        if protected_objects:
            raise ProtectedError(
                f"Cannot delete some instances of model {model.__name__!r} because "
                f"they are referenced through protected foreign keys: "
                f"{', '.join(protected_objects)}.",
                set(chain.from_iterable(protected_objects.values())),
            )
        for related_model, related_fields in model_fast_deletes.items():
            batches = self.get_del_batches(new_objs, related_fields)
            for batch in batches:
                sub_objs = self.related_objects(related_model, related_fields, batch)
                self.fast_deletes.append(sub_objs)
        for field in model._meta.private_fields:
            if hasattr(field, "bulk_related_objects"):
                # It's something like generic foreign key.
                sub_objs = await self._abulk_related_objects(field, new_objs)
                await self.acollect(
                    sub_objs, source=model, nullable=True, fail_on_restricted=False
                )

        if fail_on_restricted:
            # Raise an error if collected restricted objects (RESTRICT) aren't
            # candidates for deletion also collected via CASCADE.
            for related_model, instances in self.data.items():
                self.clear_restricted_objects_from_set(related_model, instances)
            for qs in self.fast_deletes:
                await self.aclear_restricted_objects_from_queryset(qs.model, qs)
            if self.restricted_objects.values():
                restricted_objects: defaultdict[str, list[Any]] = defaultdict(list)
                for related_model, fields in self.restricted_objects.items():
                    for restricted_field, objs in fields.items():
                        if objs:
                            key = f"'{related_model.__name__}.{restricted_field.name}'"
                            restricted_objects[key] += objs
                if restricted_objects:
                    raise RestrictedError(
                        f"Cannot delete some instances of model "
                        f"{model.__name__!r} because they are referenced through "
                        f"restricted foreign keys: {', '.join(restricted_objects)}.",
                        set(chain.from_iterable(restricted_objects.values())),
                    )

    async def _aon_delete(self, on_delete: Any, field: Any, sub_objs: Any) -> None:
        """Call Django's ``on_delete(self, field, sub_objs, using)``, then await
        the sub-collections it asked for with ``collect()``, in order."""
        outer = self._requests
        requests: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
        self._requests = requests
        try:
            run_native(
                _connection(self.using), on_delete, self, field, sub_objs, self.using
            )
        except (Deferred, SynchronousOnlyOperation) as exc:
            raise NotSupportedError(
                f"The on_delete handler of {field.model._meta.label}.{field.name} "
                f"({getattr(on_delete, '__qualname__', on_delete)!r}) runs a "
                f"query: not native (async-db never opens a sync connection for "
                f"a native delete). Nothing was deleted."
            ) from exc
        finally:
            self._requests = outer
        for objs, args, kwargs in requests:
            await self.acollect(objs, *args, **kwargs)

    async def _abulk_related_objects(self, field: Any, objs: Any) -> Any:
        """``field.bulk_related_objects(objs, using)`` (a generic relation's
        objects) as an ``AsyncQuerySet``; a ``GenericRelation``'s content type
        is read natively first (Django's ``get_for_model()`` would query)."""
        if hasattr(field, "content_type_field_name"):
            await aget_for_model(
                field.model, self.using, for_concrete_model=field.for_concrete_model
            )
        try:
            sub_objs = run_native(
                _connection(self.using), field.bulk_related_objects, objs, self.using
            )
        except (Deferred, SynchronousOnlyOperation) as exc:
            raise NotSupportedError(
                f"{field.model._meta.label}.{field.name}.bulk_related_objects() "
                f"runs a query: not native. Nothing was deleted."
            ) from exc
        return native(sub_objs)

    async def adelete(self) -> tuple[int, dict[str, int]]:
        """Async twin of ``Collector.delete()``: Django's return value
        ``(total, {model label: count})``."""
        # sort instance collections
        for model, instances in self.data.items():
            self.data[model] = sorted(instances, key=attrgetter("pk"))

        # if possible, bring the models in an order suitable for databases that
        # don't support transactions or cannot defer constraint checks until the
        # end of a transaction.
        self.sort()
        # number of objects deleted for each model label
        deleted_counter: Counter[str] = Counter()

        # Optimize for the case with a single obj and no dependencies
        if len(self.data) == 1 and len(instances) == 1:
            instance = next(iter(instances))
            if self.can_fast_delete(instance):
                async with mark_for_rollback_on_error(self.using):
                    count = await adelete_batch(
                        sql.DeleteQuery(model), [instance.pk], self.using
                    )
                setattr(instance, model._meta.pk.attname, None)
                return count, {model._meta.label: count}

        async with async_atomic(using=self.using, savepoint=False):
            # send pre_delete signals
            for model, obj in self.instances_with_model():
                if not model._meta.auto_created:
                    await asend(
                        signals.pre_delete,
                        sender=model,
                        instance=obj,
                        using=self.using,
                        origin=self.origin,
                    )

            # fast deletes
            for qs in self.fast_deletes:
                count = await native(qs)._araw_delete(using=self.using)
                if count:
                    deleted_counter[qs.model._meta.label] += count

            # update fields
            for (field, value), instances_list in self.field_updates.items():
                updates = []
                objs = []
                for instances in instances_list:
                    if (
                        isinstance(instances, models.QuerySet)
                        and instances._result_cache is None
                    ):
                        updates.append(instances)
                    else:
                        objs.extend(instances)
                if updates:
                    combined_updates = reduce(or_, updates)
                    await native(combined_updates).aupdate(**{field.name: value})
                if objs:
                    model = objs[0].__class__
                    query = sql.UpdateQuery(model)
                    await aupdate_batch(
                        query,
                        list({obj.pk for obj in objs}),
                        {field.name: value},
                        self.using,
                    )

            # reverse instance collections
            for instances in self.data.values():
                instances.reverse()

            # delete instances
            for model, instances in self.data.items():
                delete_query = sql.DeleteQuery(model)
                pk_list = [obj.pk for obj in instances]
                count = await adelete_batch(delete_query, pk_list, self.using)
                if count:
                    deleted_counter[model._meta.label] += count

                if not model._meta.auto_created:
                    for obj in instances:
                        await asend(
                            signals.post_delete,
                            sender=model,
                            instance=obj,
                            using=self.using,
                            origin=self.origin,
                        )

        for model, instances in self.data.items():
            for instance in instances:
                setattr(instance, model._meta.pk.attname, None)
        return sum(deleted_counter.values()), dict(deleted_counter)


async def _aevaluate(objs: Any) -> None:
    """Fill a queryset's result cache natively (Django's ``add()`` evaluates
    it with ``if not objs``); lists of instances are left as they are. A plain
    ``QuerySet`` gets the rows of its native twin (``native(objs)``)."""
    if isinstance(objs, models.QuerySet) and objs._result_cache is None:
        if hasattr(objs, "_afetch_all"):
            await objs._afetch_all()
            return
        twin: Any = native(objs)
        await twin._afetch_all()
        plain: Any = objs
        plain._result_cache = twin._result_cache
        plain._prefetch_done = twin._prefetch_done


async def _abool(objs: Any) -> bool:
    """Async twin of ``bool(queryset)`` (fills its result cache)."""
    await _aevaluate(objs)
    return bool(objs._result_cache)


async def _aparent(obj: Any, ptr: Any) -> Any:
    """Async twin of ``getattr(obj, ptr.name)`` for a multi-table-inheritance
    parent link (``ForwardOneToOneDescriptor.__get__``/``get_object``):
    built from ``obj``'s own fields, without a query, unless one of the
    parent's fields is deferred; then fetched natively and cached as Django
    caches it."""
    if ptr.is_cached(obj):
        return getattr(obj, ptr.name)
    rel_model = ptr.remote_field.model
    fields = [field.attname for field in rel_model._meta.concrete_fields]
    deferred = obj.get_deferred_fields()
    if not any(field in fields for field in deferred):
        return getattr(obj, ptr.name)  # no query: Django builds it from obj
    descriptor = getattr(type(obj), ptr.name)
    queryset = native(descriptor.get_queryset(instance=obj))
    rel_obj = await queryset.aget(ptr.get_reverse_related_filter(obj))
    remote_field = ptr.remote_field
    if not remote_field.multiple:
        remote_field.set_cached_value(rel_obj, obj)
    ptr.set_cached_value(obj, rel_obj)
    return rel_obj


async def adelete_batch(query: Any, pk_list: list[Any], using: str) -> int:
    """Async twin of ``DeleteQuery.delete_batch()`` (and ``do_query()``)."""
    # number of objects deleted
    num_deleted = 0
    field = query.get_meta().pk
    table = query.get_meta().db_table
    for offset in range(0, len(pk_list), GET_ITERATOR_CHUNK_SIZE):
        query.clear_where()
        query.add_filter(
            f"{field.attname}__in",
            pk_list[offset : offset + GET_ITERATOR_CHUNK_SIZE],
        )
        # DeleteQuery.do_query()
        query.alias_map = {table: query.alias_map[table]}
        compiler = await native_compiler(query, _connection(using))
        num_deleted += await compiler.aexecute_sql(ROW_COUNT)
    return num_deleted


async def aupdate_batch(
    query: Any, pk_list: Iterable[Any], values: dict[str, Any], using: str
) -> None:
    """Async twin of ``UpdateQuery.update_batch()``."""
    pk_list = list(pk_list)
    query.add_update_values(values)
    for offset in range(0, len(pk_list), GET_ITERATOR_CHUNK_SIZE):
        query.clear_where()
        query.add_filter("pk__in", pk_list[offset : offset + GET_ITERATOR_CHUNK_SIZE])
        compiler = await native_compiler(query, _connection(using))
        await compiler.aexecute_sql(NO_RESULTS)
