"""Native deletes, part 1: Django's ``Collector`` where nothing cascades.

Async twin of the parts of ``django.db.models.deletion.Collector`` that a
delete without cascades uses: ``can_fast_delete`` (Django's, unchanged), the
single-instance fast path, ``DeleteQuery.delete_batch`` and
``QuerySet._raw_delete`` executed on the task's connection, and the
``pre_delete``/``post_delete`` signals of ``Collector.delete``.

A delete that would make Django's ``Collector`` look at other rows (a
relation pointing at the model with any ``on_delete`` but ``DO_NOTHING``,
including many-to-many through rows; multi-table inheritance parents; generic
relations) raises ``NotSupportedError`` naming the model and the relation
*before any query runs*: never a partial delete. Issue 12 ports the cascade.
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter
from typing import Any

from django.db import NotSupportedError
from django.db.models import deletion as django_deletion
from django.db.models import signals, sql
from django.db.models.sql.constants import GET_ITERATOR_CHUNK_SIZE, ROW_COUNT

from async_db.models.signals import asend
from async_db.models.sql.compiler import native_compiler
from async_db.transaction import async_atomic, mark_for_rollback_on_error

__all__ = ["Collector", "adelete_batch"]


def _connection(alias: str) -> Any:
    from async_db import async_connections

    return async_connections[alias]


def cascade_needed(model: Any) -> str | None:
    """Why deleting ``model`` rows needs Django's cascade collection (None if
    it doesn't). Pure metadata: no query."""
    opts = model._meta
    if opts.concrete_model._meta.parents:
        return "it has multi-table inheritance parents"
    related: Any
    for related in django_deletion.get_candidate_relations_to_delete(opts):
        if related.field.remote_field.on_delete is not django_deletion.DO_NOTHING:
            return (
                f"{related.related_model._meta.label}.{related.field.name} points "
                f"at it with on_delete={related.field.remote_field.on_delete.__name__}"
            )
    for field in opts.private_fields:
        if hasattr(field, "bulk_related_objects"):
            return f"it has the generic relation {field.name!r}"
    return None


_Collector: Any = django_deletion.Collector


class Collector(_Collector):  # type: ignore[misc]
    """Django's ``Collector`` with native ``acollect``/``adelete`` for deletes
    that need no cascade."""

    async def acollect(self, objs: Any, keep_parents: bool = False) -> None:
        """Async twin of ``Collector.collect()``, part 1: a fast-deletable
        queryset is kept as is; otherwise the objects (a queryset is
        evaluated natively) are added, provided nothing cascades."""
        if self.can_fast_delete(objs):
            self.fast_deletes.append(objs)
            return
        model = (
            objs._meta.model
            if hasattr(objs, "_meta")
            else objs.model
            if hasattr(objs, "model")
            else None
        )
        if model is None:
            objs = list(objs)
            if not objs:
                return
            model = objs[0].__class__
        reason = cascade_needed(model)
        if reason is not None:
            raise NotSupportedError(
                f"Deleting {model._meta.label} objects needs Django's cascade "
                f"collection ({reason}): not native yet (issue 12). Nothing was "
                f"deleted."
            )
        if hasattr(objs, "_raw_delete"):
            objs = [obj async for obj in objs]
        self.add(objs)

    async def adelete(self) -> tuple[int, dict[str, int]]:
        """Async twin of ``Collector.delete()`` for collections without
        dependencies or field updates (``acollect`` guarantees it)."""
        # sort instance collections
        for model, instances in self.data.items():
            self.data[model] = sorted(instances, key=attrgetter("pk"))
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
                count = await qs._araw_delete(using=self.using)
                if count:
                    deleted_counter[qs.model._meta.label] += count

            # (no field updates: SET_NULL & co. cascade, refused by acollect)

            # reverse instance collections
            for instances in self.data.values():
                instances.reverse()

            # delete instances
            for model, instances in self.data.items():
                query = sql.DeleteQuery(model)
                pk_list = [obj.pk for obj in instances]
                count = await adelete_batch(query, pk_list, self.using)
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
