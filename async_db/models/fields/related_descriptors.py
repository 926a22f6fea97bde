"""Native async methods of Django's related managers, and prefetch evaluation.

Read beside ``django/db/models/fields/related_descriptors.py``. Django builds
one related manager class per relation, as a subclass of the related model's
default manager class: ``create_reverse_many_to_one_manager()``'s
``RelatedManager`` (``author.book_set``) and
``create_forward_many_to_many_manager()``'s ``ManyRelatedManager`` (both sides
of a ``ManyToManyField``). Their async writes (``aadd``, ``aremove``,
``aclear``, ``aset``, ``acreate``, ``aget_or_create``, ``aupdate_or_create``)
run the sync methods in a thread (``sync_to_async``). :func:`install_related_twins`
replaces exactly those methods, on such a class, with the twins below: the
sync methods' decision code in Django's order, each query awaited on the
task's async connection (``native()`` querysets), ``transaction.atomic`` as
``async_atomic`` and ``m2m_changed`` sent with
:func:`async_db.models.signals.asend` (async receivers awaited in the task).
Everything else of the managers (reads, the sync methods, the no-I/O helpers
``_check_fk_val``, ``_get_target_ids``, ``_get_add_plan``,
``_build_remove_filters``, ...) is Django's.

:func:`aget_prefetch_querysets` is the prefetch side: Django's
``get_prefetch_querysets()`` builds the related queryset without I/O, except
that three prefetchers also evaluate it to set the reverse caches; here the
query is built by Django's code and evaluated natively, then those caches are
set by the same loops.
"""

from __future__ import annotations

from typing import Any

from django.db import NotSupportedError, router
from django.db.models import Model, QuerySet, signals
from django.db.models.fields import related_descriptors as django_descriptors
from django.db.models.utils import resolve_callables

from async_db.models.query import AsyncQuerySet, native
from async_db.models.signals import asend
from async_db.transaction import async_atomic

__all__ = [
    "GenericRelatedManagerTwins",
    "ManyRelatedManagerTwins",
    "RelatedManagerTwins",
    "afetch_all",
    "aget_prefetch_querysets",
    "awarm_content_types",
    "install_related_twins",
]

DJANGO_MODULE = "django.db.models.fields.related_descriptors"
#: ``__qualname__`` of the classes Django's factories build.
REVERSE_MANY_TO_ONE = "create_reverse_many_to_one_manager.<locals>.RelatedManager"
MANY_TO_MANY = "create_forward_many_to_many_manager.<locals>.ManyRelatedManager"
CONTENTTYPES_MODULE = "django.contrib.contenttypes.fields"
GENERIC_RELATED = "create_generic_related_manager.<locals>.GenericRelatedObjectManager"
#: The modules whose factories build the related manager classes.
_FACTORY_MODULES = frozenset({DJANGO_MODULE, CONTENTTYPES_MODULE})


def _django_class(manager: Any, qualname: str) -> type:
    """The class Django's factory built, in ``manager``'s MRO (the
    ``RelatedManager`` of Django's ``super(RelatedManager, ...)``)."""
    for klass in type(manager).__mro__:
        if klass.__module__ in _FACTORY_MODULES and klass.__qualname__ == qualname:
            return klass
    raise TypeError(f"{type(manager).__qualname__} is not a {qualname}.")


def _parent_queryset(manager: Any, qualname: str) -> Any:
    """``super().get_queryset()`` of Django's related manager code: the
    parent manager's queryset, without the relation's filters."""
    parent: Any = super(_django_class(manager, qualname), manager)
    return parent.get_queryset()


def _parent_method(manager: Any, qualname: str, db: str, name: str) -> Any:
    """``super(RelatedManager, self.db_manager(db)).<name>`` of Django's code,
    native: the parent manager's method if it is an ``AsyncManager`` (its
    methods call the related manager's filtered ``get_queryset()``), else the
    same filtered queryset as an ``AsyncQuerySet``."""
    from async_db.models.manager import AsyncManager

    target = manager.db_manager(db)
    if isinstance(manager, AsyncManager):
        return getattr(super(_django_class(manager, qualname), target), name)
    return getattr(native(target.get_queryset()), name)


async def _acall_parent(manager: Any, qualname: str, name: str, kwargs: Any) -> Any:
    """``super().using(db).<name>(**kwargs)`` of Django's related manager
    writes (``create``, ``get_or_create``, ``update_or_create``), natively,
    on the database the router picks for writing the relation."""
    db = router.db_for_write(manager.model, instance=manager.instance)
    return await _parent_method(manager, qualname, db, name)(**kwargs)


async def afetch_all(queryset: Any) -> None:
    """``queryset._fetch_all()`` natively, for any ``QuerySet``: an
    ``AsyncQuerySet`` fills its own result cache (and runs its
    ``prefetch_related`` lookups); another queryset is evaluated as a native
    clone whose result cache and prefetch state are copied back."""
    if isinstance(queryset, AsyncQuerySet):
        await queryset._afetch_all()
        return
    if queryset._result_cache is not None and (
        queryset._prefetch_done or not queryset._prefetch_related_lookups
    ):
        return
    clone = native(queryset)
    clone._result_cache = queryset._result_cache
    await clone._afetch_all()
    queryset._result_cache = clone._result_cache
    queryset._prefetch_done = clone._prefetch_done


async def _atuple(objs: Any) -> tuple[Any, ...]:
    """``tuple(objs)`` of Django's ``set()``: a queryset is evaluated natively."""
    if isinstance(objs, QuerySet):
        await afetch_all(objs)
        queryset: Any = objs
        return tuple(queryset._result_cache)
    return tuple(objs)


class RelatedManagerTwins:
    """Async twins of the writes of ``create_reverse_many_to_one_manager()``'s
    ``RelatedManager`` (``author.book_set``). ``aremove``/``aclear`` exist
    only where Django defines ``remove``/``clear``: a nullable foreign key."""

    async def aadd(self: Any, *objs: Any, bulk: bool = True) -> None:
        """Async twin of ``RelatedManager.add()``: ``bulk=True`` is one native
        ``UPDATE`` of the base manager's rows (saved objects of the same
        database only); ``bulk=False`` saves each object natively
        (``asave``), inside ``async_atomic(savepoint=False)``."""
        self._check_fk_val()
        self._remove_prefetched_objects()
        db = router.db_for_write(self.model, instance=self.instance)

        def check_and_update_obj(obj: Any) -> None:
            if not isinstance(obj, self.model):
                raise TypeError(
                    f"'{self.model._meta.object_name}' instance expected, got {obj!r}"
                )
            setattr(obj, self.field.name, self.instance)

        if bulk:
            pks = []
            for obj in objs:
                check_and_update_obj(obj)
                if obj._state.adding or obj._state.db != db:
                    raise ValueError(
                        f"{obj!r} instance isn't saved. Use bulk=False or save "
                        "the object first."
                    )
                pks.append(obj.pk)
            await native(self.model._base_manager.using(db).filter(pk__in=pks)).aupdate(
                **{
                    self.field.name: self.instance,
                }
            )
        else:
            from async_db.models.base import asave_object

            async with async_atomic(using=db, savepoint=False):
                for obj in objs:
                    check_and_update_obj(obj)
                    await asave_object(obj)

    aadd.alters_data = True  # type: ignore[attr-defined]

    async def acreate(self: Any, **kwargs: Any) -> Any:
        """Async twin of ``RelatedManager.create()``."""
        self._check_fk_val()
        self._remove_prefetched_objects()
        kwargs[self.field.name] = self.instance
        return await _acall_parent(self, REVERSE_MANY_TO_ONE, "acreate", kwargs)

    acreate.alters_data = True  # type: ignore[attr-defined]

    async def aget_or_create(self: Any, **kwargs: Any) -> tuple[Any, bool]:
        """Async twin of ``RelatedManager.get_or_create()``."""
        self._check_fk_val()
        kwargs[self.field.name] = self.instance
        result: tuple[Any, bool] = await _acall_parent(
            self, REVERSE_MANY_TO_ONE, "aget_or_create", kwargs
        )
        return result

    aget_or_create.alters_data = True  # type: ignore[attr-defined]

    async def aupdate_or_create(self: Any, **kwargs: Any) -> tuple[Any, bool]:
        """Async twin of ``RelatedManager.update_or_create()``."""
        self._check_fk_val()
        kwargs[self.field.name] = self.instance
        result: tuple[Any, bool] = await _acall_parent(
            self, REVERSE_MANY_TO_ONE, "aupdate_or_create", kwargs
        )
        return result

    aupdate_or_create.alters_data = True  # type: ignore[attr-defined]

    async def aremove(self: Any, *objs: Any, bulk: bool = True) -> None:
        """Async twin of ``RelatedManager.remove()`` (nullable foreign keys)."""
        if not objs:
            return
        self._check_fk_val()
        val = self.field.get_foreign_related_value(self.instance)
        old_ids = set()
        for obj in objs:
            if not isinstance(obj, self.model):
                raise TypeError(
                    f"'{self.model._meta.object_name}' instance expected, got {obj!r}"
                )
            # Is obj actually part of this descriptor set?
            if self.field.get_local_related_value(obj) == val:
                old_ids.add(obj.pk)
            else:
                raise self.field.remote_field.model.DoesNotExist(
                    f"{obj!r} is not related to {self.instance!r}."
                )
        await self._aclear(self.filter(pk__in=old_ids), bulk)

    aremove.alters_data = True  # type: ignore[attr-defined]

    async def aclear(self: Any, *, bulk: bool = True) -> None:
        """Async twin of ``RelatedManager.clear()`` (nullable foreign keys)."""
        self._check_fk_val()
        await self._aclear(self, bulk)

    aclear.alters_data = True  # type: ignore[attr-defined]

    async def _aclear(self: Any, queryset: Any, bulk: bool) -> None:
        """Async twin of ``RelatedManager._clear()``: one native ``UPDATE``
        (``bulk=True``), or a native ``asave(update_fields=[fk])`` per row."""
        self._remove_prefetched_objects()
        db = router.db_for_write(self.model, instance=self.instance)
        queryset = native(queryset.using(db))
        if bulk:
            # `QuerySet.update()` is intrinsically atomic.
            await queryset.aupdate(**{self.field.name: None})
        else:
            from async_db.models.base import asave_object

            async with async_atomic(using=db, savepoint=False):
                async for obj in queryset:
                    setattr(obj, self.field.name, None)
                    await asave_object(obj, update_fields=[self.field.name])

    _aclear.alters_data = True  # type: ignore[attr-defined]

    async def aset(
        self: Any, objs: Any, *, bulk: bool = True, clear: bool = False
    ) -> None:
        """Async twin of ``RelatedManager.set()``: a queryset ``objs`` is
        evaluated natively first (Django's ``tuple(objs)``, refs #19816)."""
        self._check_fk_val()
        # Force evaluation of `objs` in case it's a queryset whose value
        # could be affected by `manager.clear()`. Refs #19816.
        objs = await _atuple(objs)

        if self.field.null:
            db = router.db_for_write(self.model, instance=self.instance)
            async with async_atomic(using=db, savepoint=False):
                if clear:
                    await self.aclear(bulk=bulk)
                    await self.aadd(*objs, bulk=bulk)
                else:
                    old_objs = {obj async for obj in native(self.using(db).all())}
                    new_objs = []
                    for obj in objs:
                        if obj in old_objs:
                            old_objs.remove(obj)
                        else:
                            new_objs.append(obj)

                    await self.aremove(*old_objs, bulk=bulk)
                    await self.aadd(*new_objs, bulk=bulk)
        else:
            await self.aadd(*objs, bulk=bulk)

    aset.alters_data = True  # type: ignore[attr-defined]


class ManyRelatedManagerTwins:
    """Async twins of the writes of ``create_forward_many_to_many_manager()``'s
    ``ManyRelatedManager`` (either side of a ``ManyToManyField``, auto-created
    or custom ``through``, symmetrical or not)."""

    async def aadd(self: Any, *objs: Any, through_defaults: Any = None) -> None:
        """Async twin of ``ManyRelatedManager.add()``."""
        self._remove_prefetched_objects()
        db = router.db_for_write(self.through, instance=self.instance)
        async with async_atomic(using=db, savepoint=False):
            await self._aadd_items(
                self.source_field_name,
                self.target_field_name,
                *objs,
                through_defaults=through_defaults,
            )
            # If this is a symmetrical m2m relation to self, add the mirror
            # entry in the m2m table.
            if self.symmetrical:
                await self._aadd_items(
                    self.target_field_name,
                    self.source_field_name,
                    *objs,
                    through_defaults=through_defaults,
                )

    aadd.alters_data = True  # type: ignore[attr-defined]

    async def aremove(self: Any, *objs: Any) -> None:
        """Async twin of ``ManyRelatedManager.remove()``."""
        self._remove_prefetched_objects()
        await self._aremove_items(self.source_field_name, self.target_field_name, *objs)

    aremove.alters_data = True  # type: ignore[attr-defined]

    async def aclear(self: Any) -> None:
        """Async twin of ``ManyRelatedManager.clear()``: ``pre_clear``, one
        native delete of the through rows, ``post_clear``, in one
        ``async_atomic(savepoint=False)``."""
        db = router.db_for_write(self.through, instance=self.instance)
        async with async_atomic(using=db, savepoint=False):
            await asend(
                signals.m2m_changed,
                sender=self.through,
                action="pre_clear",
                instance=self.instance,
                reverse=self.reverse,
                model=self.model,
                pk_set=None,
                using=db,
            )
            self._remove_prefetched_objects()
            filters = self._build_remove_filters(
                _parent_queryset(self, MANY_TO_MANY).using(db)
            )
            await native(
                self.through._default_manager.using(db).filter(filters)
            ).adelete()

            await asend(
                signals.m2m_changed,
                sender=self.through,
                action="post_clear",
                instance=self.instance,
                reverse=self.reverse,
                model=self.model,
                pk_set=None,
                using=db,
            )

    aclear.alters_data = True  # type: ignore[attr-defined]

    async def aset(
        self: Any, objs: Any, *, clear: bool = False, through_defaults: Any = None
    ) -> None:
        """Async twin of ``ManyRelatedManager.set()``: a queryset ``objs`` is
        evaluated natively first (Django's ``tuple(objs)``, refs #19816)."""
        # Force evaluation of `objs` in case it's a queryset whose value
        # could be affected by `manager.clear()`. Refs #19816.
        objs = await _atuple(objs)

        db = router.db_for_write(self.through, instance=self.instance)
        async with async_atomic(using=db, savepoint=False):
            if clear:
                await self.aclear()
                await self.aadd(*objs, through_defaults=through_defaults)
            else:
                old_ids = {
                    value
                    async for value in native(
                        self.using(db).values_list(
                            self.target_field.target_field.attname, flat=True
                        )
                    )
                }

                new_objs = []
                for obj in objs:
                    fk_val = (
                        self.target_field.get_foreign_related_value(obj)[0]
                        if isinstance(obj, self.model)
                        else self.target_field.get_prep_value(obj)
                    )
                    if fk_val in old_ids:
                        old_ids.remove(fk_val)
                    else:
                        new_objs.append(obj)

                await self.aremove(*old_ids)
                await self.aadd(*new_objs, through_defaults=through_defaults)

    aset.alters_data = True  # type: ignore[attr-defined]

    async def acreate(self: Any, *, through_defaults: Any = None, **kwargs: Any) -> Any:
        """Async twin of ``ManyRelatedManager.create()``."""
        db = router.db_for_write(self.instance.__class__, instance=self.instance)
        new_obj = await _parent_method(self, MANY_TO_MANY, db, "acreate")(**kwargs)
        await self.aadd(new_obj, through_defaults=through_defaults)
        return new_obj

    acreate.alters_data = True  # type: ignore[attr-defined]

    async def aget_or_create(
        self: Any, *, through_defaults: Any = None, **kwargs: Any
    ) -> tuple[Any, bool]:
        """Async twin of ``ManyRelatedManager.get_or_create()``."""
        db = router.db_for_write(self.instance.__class__, instance=self.instance)
        obj, created = await _parent_method(self, MANY_TO_MANY, db, "aget_or_create")(
            **kwargs
        )
        # We only need to add() if created because if we got an object back
        # from get() then the relationship already exists.
        if created:
            await self.aadd(obj, through_defaults=through_defaults)
        return obj, created

    aget_or_create.alters_data = True  # type: ignore[attr-defined]

    async def aupdate_or_create(
        self: Any, *, through_defaults: Any = None, **kwargs: Any
    ) -> tuple[Any, bool]:
        """Async twin of ``ManyRelatedManager.update_or_create()``."""
        db = router.db_for_write(self.instance.__class__, instance=self.instance)
        obj, created = await _parent_method(
            self, MANY_TO_MANY, db, "aupdate_or_create"
        )(**kwargs)
        # We only need to add() if created because if we got an object back
        # from get() then the relationship already exists.
        if created:
            await self.aadd(obj, through_defaults=through_defaults)
        return obj, created

    aupdate_or_create.alters_data = True  # type: ignore[attr-defined]

    async def _aget_missing_target_ids(
        self: Any,
        source_field_name: str,
        target_field_name: str,
        db: str,
        target_ids: set[Any],
    ) -> set[Any]:
        """Async twin of ``ManyRelatedManager._get_missing_target_ids()``."""
        vals = (
            self.through._default_manager.using(db)
            .values_list(target_field_name, flat=True)
            .filter(
                **{
                    source_field_name: self.related_val[0],
                    f"{target_field_name}__in": target_ids,
                }
            )
        )
        return target_ids.difference([val async for val in native(vals)])

    async def _aadd_items(
        self: Any,
        source_field_name: str,
        target_field_name: str,
        *objs: Any,
        through_defaults: Any = None,
    ) -> None:
        """Async twin of ``ManyRelatedManager._add_items()``: Django's add plan
        (fast ``bulk_create(ignore_conflicts=True)`` when nobody listens to
        ``m2m_changed``), through rows inserted with the native
        ``abulk_create``, ``pre_add``/``post_add`` sent in the task."""
        # source_field_name: the PK fieldname in join table for the source object
        # target_field_name: the PK fieldname in join table for the target object
        # *objs - objects to add. Either object instances, or primary keys
        # of object instances.
        if not objs:
            return

        through_defaults = dict(resolve_callables(through_defaults or {}))
        target_ids = self._get_target_ids(target_field_name, objs)
        db = router.db_for_write(self.through, instance=self.instance)
        can_ignore_conflicts, must_send_signals, can_fast_add = self._get_add_plan(
            db, source_field_name
        )
        if can_fast_add:
            await native(self.through._default_manager.using(db)).abulk_create(
                [
                    self.through(
                        **{
                            f"{source_field_name}_id": self.related_val[0],
                            f"{target_field_name}_id": target_id,
                        }
                    )
                    for target_id in target_ids
                ],
                ignore_conflicts=True,
            )
            return

        missing_target_ids = await self._aget_missing_target_ids(
            source_field_name, target_field_name, db, target_ids
        )
        async with async_atomic(using=db, savepoint=False):
            if must_send_signals:
                await asend(
                    signals.m2m_changed,
                    sender=self.through,
                    action="pre_add",
                    instance=self.instance,
                    reverse=self.reverse,
                    model=self.model,
                    pk_set=missing_target_ids,
                    using=db,
                )
            # Add the ones that aren't there already.
            await native(self.through._default_manager.using(db)).abulk_create(
                [
                    self.through(
                        **through_defaults,
                        **{
                            f"{source_field_name}_id": self.related_val[0],
                            f"{target_field_name}_id": target_id,
                        },
                    )
                    for target_id in missing_target_ids
                ],
                ignore_conflicts=can_ignore_conflicts,
            )

            if must_send_signals:
                await asend(
                    signals.m2m_changed,
                    sender=self.through,
                    action="post_add",
                    instance=self.instance,
                    reverse=self.reverse,
                    model=self.model,
                    pk_set=missing_target_ids,
                    using=db,
                )

    async def _aremove_items(
        self: Any, source_field_name: str, target_field_name: str, *objs: Any
    ) -> None:
        """Async twin of ``ManyRelatedManager._remove_items()``."""
        # source_field_name: the PK colname in join table for the source object
        # target_field_name: the PK colname in join table for the target object
        # *objs - objects to remove. Either object instances, or primary
        # keys of object instances.
        if not objs:
            return

        # Check that all the objects are of the right type
        old_ids = set()
        for obj in objs:
            if isinstance(obj, self.model):
                fk_val = self.target_field.get_foreign_related_value(obj)[0]
                old_ids.add(fk_val)
            else:
                old_ids.add(obj)

        db = router.db_for_write(self.through, instance=self.instance)
        async with async_atomic(using=db, savepoint=False):
            # Send a signal to the other end if need be.
            await asend(
                signals.m2m_changed,
                sender=self.through,
                action="pre_remove",
                instance=self.instance,
                reverse=self.reverse,
                model=self.model,
                pk_set=old_ids,
                using=db,
            )
            target_model_qs = _parent_queryset(self, MANY_TO_MANY)
            if target_model_qs._has_filters():
                old_vals = target_model_qs.using(db).filter(
                    **{f"{self.target_field.target_field.attname}__in": old_ids}
                )
            else:
                old_vals = old_ids
            filters = self._build_remove_filters(old_vals)
            await native(
                self.through._default_manager.using(db).filter(filters)
            ).adelete()

            await asend(
                signals.m2m_changed,
                sender=self.through,
                action="post_remove",
                instance=self.instance,
                reverse=self.reverse,
                model=self.model,
                pk_set=old_ids,
                using=db,
            )


#: Django's public async writes each twin class replaces; ``aremove`` and
#: ``aclear`` of a reverse foreign key exist only where Django defines them.
class GenericRelatedManagerTwins:
    """Async twins of the writes of ``contenttypes``'
    ``create_generic_related_manager()``'s ``GenericRelatedObjectManager``
    (``shelf.notes`` for a ``GenericRelation``). Building the manager looks
    its content type up (Django's cache, a sync query on a miss, as in
    Django): read it first with
    :func:`async_db.contrib.contenttypes.aget_for_model` in async code."""

    async def aadd(self: Any, *objs: Any, bulk: bool = True) -> None:
        """Async twin of ``GenericRelatedObjectManager.add()``: ``bulk=True``
        is one native ``UPDATE`` of the base manager's rows; ``bulk=False``
        saves each object natively, inside ``async_atomic(savepoint=False)``."""
        self._remove_prefetched_objects()
        db = router.db_for_write(self.model, instance=self.instance)

        def check_and_update_obj(obj: Any) -> None:
            if not isinstance(obj, self.model):
                raise TypeError(
                    f"'{self.model._meta.object_name}' instance expected, got {obj!r}"
                )
            setattr(obj, self.content_type_field_name, self.content_type)
            setattr(obj, self.object_id_field_name, self.pk_val)

        if bulk:
            pks = []
            for obj in objs:
                if obj._state.adding or obj._state.db != db:
                    raise ValueError(
                        f"{obj!r} instance isn't saved. Use bulk=False or save "
                        "the object first."
                    )
                check_and_update_obj(obj)
                pks.append(obj.pk)

            await native(self.model._base_manager.using(db).filter(pk__in=pks)).aupdate(
                **{
                    self.content_type_field_name: self.content_type,
                    self.object_id_field_name: self.pk_val,
                }
            )
        else:
            from async_db.models.base import asave_instance

            async with async_atomic(using=db, savepoint=False):
                for obj in objs:
                    check_and_update_obj(obj)
                    await asave_instance(obj)

    aadd.alters_data = True  # type: ignore[attr-defined]

    async def aremove(self: Any, *objs: Any, bulk: bool = True) -> None:
        """Async twin of ``GenericRelatedObjectManager.remove()``: the
        objects are deleted (a generic relation has no null to set)."""
        if not objs:
            return
        await self._aclear(self.filter(pk__in=[o.pk for o in objs]), bulk)

    aremove.alters_data = True  # type: ignore[attr-defined]

    async def aclear(self: Any, *, bulk: bool = True) -> None:
        """Async twin of ``GenericRelatedObjectManager.clear()``."""
        await self._aclear(self, bulk)

    aclear.alters_data = True  # type: ignore[attr-defined]

    async def _aclear(self: Any, queryset: Any, bulk: bool) -> None:
        """Async twin of ``GenericRelatedObjectManager._clear()``: a native
        ``adelete()`` of the queryset (its own block, with the delete
        signals), or each object's native ``adelete()``."""
        self._remove_prefetched_objects()
        db = router.db_for_write(self.model, instance=self.instance)
        queryset = native(queryset.using(db))
        if bulk:
            # `QuerySet.delete()` creates its own atomic block which
            # contains the `pre_delete` and `post_delete` signal handlers.
            await queryset.adelete()
        else:
            from async_db.models.base import adelete_instance

            async with async_atomic(using=db, savepoint=False):
                async for obj in queryset:
                    await adelete_instance(obj)

    _aclear.alters_data = True  # type: ignore[attr-defined]

    async def aset(
        self: Any, objs: Any, *, bulk: bool = True, clear: bool = False
    ) -> None:
        """Async twin of ``GenericRelatedObjectManager.set()``."""
        # Force evaluation of `objs` in case it's a queryset whose value
        # could be affected by `manager.clear()`. Refs #19816.
        objs = await _atuple(objs)

        db = router.db_for_write(self.model, instance=self.instance)
        async with async_atomic(using=db, savepoint=False):
            if clear:
                await self.aclear()
                await self.aadd(*objs, bulk=bulk)
            else:
                old_objs = {obj async for obj in native(self.using(db).all())}
                new_objs = []
                for obj in objs:
                    if obj in old_objs:
                        old_objs.remove(obj)
                    else:
                        new_objs.append(obj)

                await self.aremove(*old_objs)
                await self.aadd(*new_objs, bulk=bulk)

    aset.alters_data = True  # type: ignore[attr-defined]

    async def acreate(self: Any, **kwargs: Any) -> Any:
        """Async twin of ``GenericRelatedObjectManager.create()``."""
        self._remove_prefetched_objects()
        kwargs[self.content_type_field_name] = self.content_type
        kwargs[self.object_id_field_name] = self.pk_val
        return await _acall_parent(self, GENERIC_RELATED, "acreate", kwargs)

    acreate.alters_data = True  # type: ignore[attr-defined]

    async def aget_or_create(self: Any, **kwargs: Any) -> tuple[Any, bool]:
        """Async twin of ``GenericRelatedObjectManager.get_or_create()``."""
        kwargs[self.content_type_field_name] = self.content_type
        kwargs[self.object_id_field_name] = self.pk_val
        result: tuple[Any, bool] = await _acall_parent(
            self, GENERIC_RELATED, "aget_or_create", kwargs
        )
        return result

    aget_or_create.alters_data = True  # type: ignore[attr-defined]

    async def aupdate_or_create(self: Any, **kwargs: Any) -> tuple[Any, bool]:
        """Async twin of ``GenericRelatedObjectManager.update_or_create()``."""
        kwargs[self.content_type_field_name] = self.content_type
        kwargs[self.object_id_field_name] = self.pk_val
        result: tuple[Any, bool] = await _acall_parent(
            self, GENERIC_RELATED, "aupdate_or_create", kwargs
        )
        return result

    aupdate_or_create.alters_data = True  # type: ignore[attr-defined]


_TWINS: dict[str, tuple[type, tuple[str, ...]]] = {
    REVERSE_MANY_TO_ONE: (
        RelatedManagerTwins,
        (
            "aadd",
            "acreate",
            "aget_or_create",
            "aupdate_or_create",
            "aremove",
            "aclear",
            "aset",
        ),
    ),
    MANY_TO_MANY: (
        ManyRelatedManagerTwins,
        (
            "aadd",
            "aremove",
            "aclear",
            "aset",
            "acreate",
            "aget_or_create",
            "aupdate_or_create",
        ),
    ),
    GENERIC_RELATED: (
        GenericRelatedManagerTwins,
        (
            "aadd",
            "aremove",
            "aclear",
            "aset",
            "acreate",
            "aget_or_create",
            "aupdate_or_create",
        ),
    ),
}
#: Private helpers the twins call (installed with them).
_HELPERS = ("_aclear", "_aget_missing_target_ids", "_aadd_items", "_aremove_items")


def install_related_twins(cls: type) -> bool:
    """Give ``cls``, a related manager class built by Django's
    ``create_reverse_many_to_one_manager()``,
    ``create_forward_many_to_many_manager()`` or contenttypes'
    ``create_generic_related_manager()``, the native async writes in
    place of Django's ``sync_to_async`` ones; return whether it was one.
    Only methods Django defined on ``cls`` are replaced (a non-nullable
    foreign key keeps having no ``aremove``/``aclear``)."""
    if cls.__module__ not in _FACTORY_MODULES or cls.__qualname__ not in _TWINS:
        return False
    twins, names = _TWINS[cls.__qualname__]
    for name in names:
        if name in cls.__dict__:
            setattr(cls, name, twins.__dict__[name])
    for name in _HELPERS:
        # _aclear() is the twin of _clear(), defined with clear() only.
        if name in twins.__dict__ and (name != "_aclear" or "aclear" in cls.__dict__):
            setattr(cls, name, twins.__dict__[name])
    return True


# ##### Prefetch #####


_unevaluated_classes: dict[type, type] = {}


def _unevaluated_class(klass: type) -> type:
    """``klass`` whose iteration yields nothing: Django's
    ``get_prefetch_querysets()`` builds its queryset from ours as usual, and
    its ``for rel_obj in queryset:`` loop runs no sync query."""
    unevaluated = _unevaluated_classes.get(klass)
    if unevaluated is None:
        unevaluated = type(
            klass.__name__, (klass,), {"__iter__": lambda self: iter(())}
        )
        _unevaluated_classes[klass] = unevaluated
    return unevaluated


async def _abuild_and_evaluate(
    prefetcher: Any, default: Any, instances: list[Any], querysets: Any
) -> tuple[Any, ...]:
    """Django's ``prefetcher.get_prefetch_querysets()`` on an unevaluated
    copy of the queryset it would use, then the returned queryset evaluated
    natively (Django evaluates it inside, before returning)."""
    queryset = querysets[0] if querysets else default
    original = type(queryset)
    proxy = queryset._chain()
    proxy.__class__ = _unevaluated_class(original)
    result = prefetcher.get_prefetch_querysets(instances, [proxy])
    rel_qs = result[0]
    rel_qs.__class__ = original
    await afetch_all(rel_qs)
    return tuple(result)


async def aget_prefetch_querysets(
    prefetcher: Any, instances: list[Any], querysets: Any = None
) -> tuple[Any, ...]:
    """``prefetcher.get_prefetch_querysets(instances, querysets)``, natively.

    For a forward foreign key or a many-to-many manager, Django's method
    does no I/O: it is called as is (the queryset is evaluated by the caller,
    ``aprefetch_related_objects``). Django's reverse foreign key manager,
    forward one-to-one and reverse one-to-one prefetchers also iterate the
    queryset to set the reverse caches: the queryset is built by Django's
    code, evaluated natively here, and the caches are set by Django's loops.
    A ``GenericRelation``'s manager is called as is once its content types
    are cached (:func:`awarm_content_types`); a ``GenericForeignKey``'s is
    its async twin, one native query per content type. Other prefetchers
    (your own) raise ``NotSupportedError``: their
    ``get_prefetch_querysets()`` may run sync queries."""
    klass = type(prefetcher)
    if klass.__module__ == CONTENTTYPES_MODULE and (
        klass.__qualname__ == "GenericForeignKey"
    ):
        # Before the length check: GenericPrefetch gives one queryset per
        # content type.
        return await _ageneric_foreign_key_querysets(prefetcher, instances, querysets)
    if querysets and len(querysets) != 1:
        raise ValueError(
            "querysets argument of get_prefetch_querysets() should have a length of 1."
        )
    descriptor: Any = prefetcher
    if isinstance(prefetcher, django_descriptors.ForwardManyToOneDescriptor):
        remote_field = prefetcher.field.remote_field
        if remote_field.multiple:
            return tuple(prefetcher.get_prefetch_querysets(instances, querysets))
        result = await _abuild_and_evaluate(
            prefetcher, descriptor.get_queryset(), instances, querysets
        )
        rel_qs, rel_obj_attr, instance_attr = result[:3]
        instances_dict = {instance_attr(inst): inst for inst in instances}
        # Since we're going to assign directly in the cache,
        # we must manage the reverse relation cache manually.
        for rel_obj in rel_qs:
            instance = instances_dict[rel_obj_attr(rel_obj)]
            remote_field.set_cached_value(rel_obj, instance)
        return result
    if isinstance(prefetcher, django_descriptors.ReverseOneToOneDescriptor):
        result = await _abuild_and_evaluate(
            prefetcher, descriptor.get_queryset(), instances, querysets
        )
        rel_qs, rel_obj_attr, instance_attr = result[:3]
        instances_dict = {instance_attr(inst): inst for inst in instances}
        # Since we're going to assign directly in the cache,
        # we must manage the reverse relation cache manually.
        for rel_obj in rel_qs:
            instance = instances_dict[rel_obj_attr(rel_obj)]
            prefetcher.related.field.set_cached_value(rel_obj, instance)
        return result
    qualnames = {k.__qualname__ for k in klass.__mro__ if k.__module__ == DJANGO_MODULE}
    if REVERSE_MANY_TO_ONE in qualnames:
        result = await _abuild_and_evaluate(
            prefetcher,
            _parent_queryset(prefetcher, REVERSE_MANY_TO_ONE),
            instances,
            querysets,
        )
        rel_qs, rel_obj_attr, instance_attr = result[:3]
        field = prefetcher.field
        instances_dict = {instance_attr(inst): inst for inst in instances}
        # Since we just bypassed this class' get_queryset(), we must manage
        # the reverse relation manually.
        for rel_obj in rel_qs:
            if not field.is_cached(rel_obj):
                instance = instances_dict[rel_obj_attr(rel_obj)]
                field.set_cached_value(rel_obj, instance)
        return result
    if MANY_TO_MANY in qualnames:
        return tuple(prefetcher.get_prefetch_querysets(instances, querysets))
    if any(
        k.__module__ == CONTENTTYPES_MODULE and k.__qualname__ == GENERIC_RELATED
        for k in klass.__mro__
    ):
        # A GenericRelation's manager: Django's method does no I/O once the
        # instances' content types are cached (awarm_content_types(), called
        # before the manager was built), and returns the queryset unevaluated.
        return tuple(prefetcher.get_prefetch_querysets(instances, querysets))
    what = (
        type(prefetcher).__qualname__
        if not isinstance(prefetcher, (Model, QuerySet))
        else repr(prefetcher)
    )
    raise NotSupportedError(
        f"prefetch_related() through {what} ({klass.__module__}) is not native: "
        f"async-db evaluates the prefetches of Django's foreign key, one-to-one, "
        f"many-to-many and generic relations only; its get_prefetch_querysets() "
        f"could run sync queries."
    )


async def awarm_content_types(descriptor: Any, instances: list[Any]) -> None:
    """Before Django builds a ``GenericRelation``'s manager on ``instances``
    (``get_prefetcher()``, the prefetch caches): read the content type of
    each instance's model natively into Django's cache, since the manager's
    ``__init__`` looks it up (a sync query on a miss). Other descriptors:
    nothing to do."""
    if type(descriptor).__qualname__ != "ReverseGenericManyToOneDescriptor" or (
        type(descriptor).__module__ != CONTENTTYPES_MODULE
    ):
        return
    from async_db.contrib.contenttypes import aget_for_model

    field = descriptor.field
    for model, db in {(type(obj), obj._state.db) for obj in instances}:
        await aget_for_model(model, db, for_concrete_model=field.for_concrete_model)


async def _ageneric_foreign_key_querysets(
    gfk: Any, instances: list[Any], querysets: Any
) -> tuple[Any, ...]:
    """Async twin of ``GenericForeignKey.get_prefetch_querysets()``: Django's
    grouping by content type, one query per content type evaluated natively,
    the content types read natively into Django's cache (its ``gfk_key``
    and ``__set__`` look them up afterwards, without I/O)."""
    from collections import defaultdict

    from async_db.contrib.contenttypes import aget_for_id, aget_for_model

    custom_queryset_dict = {}
    if querysets is not None:
        for queryset in querysets:
            ct = await aget_for_model(
                queryset.query.model,
                queryset.db,
                for_concrete_model=gfk.for_concrete_model,
            )
            if ct.pk in custom_queryset_dict:
                raise ValueError("Only one queryset is allowed for each content type.")
            custom_queryset_dict[ct.pk] = queryset

    # For efficiency, group the instances by content type and then do one
    # query per model
    fk_dict: defaultdict[Any, set[Any]] = defaultdict(set)
    # We need one instance for each group in order to get the right db:
    instance_dict = {}
    ct_attname = gfk.model._meta.get_field(gfk.ct_field).attname
    for instance in instances:
        # We avoid looking for values if either ct_id or fkey value is None
        ct_id = getattr(instance, ct_attname)
        if ct_id is not None:
            fk_val = getattr(instance, gfk.fk_field)
            if fk_val is not None:
                fk_dict[ct_id].add(fk_val)
                instance_dict[ct_id] = instance
    # gfk_key() looks each content type up with each instance's db.
    for ct_id, db in {
        (getattr(obj, ct_attname), obj._state.db)
        for obj in instances
        if getattr(obj, ct_attname) is not None
    }:
        await aget_for_id(ct_id, db)

    ret_val: list[Any] = []
    for ct_id, fkeys in fk_dict.items():
        if ct_id in custom_queryset_dict:
            # Return values from the custom queryset, if provided.
            queryset = custom_queryset_dict[ct_id].filter(pk__in=fkeys)
        else:
            instance = instance_dict[ct_id]
            ct = await aget_for_id(ct_id, instance._state.db)
            queryset = ct.get_all_objects_for_this_type(pk__in=fkeys)
        await afetch_all(queryset)
        ret_val.extend(queryset)
    # The prefetch sets each instance's GenericForeignKey (its __set__ looks
    # the value's content type up).
    for model, db in {(type(obj), obj._state.db) for obj in ret_val}:
        await aget_for_model(model, db, for_concrete_model=gfk.for_concrete_model)

    # For doing the join in Python, we have to match both the FK val and the
    # content type, so we use a callable that returns a (fk, class) pair.
    def gfk_key(obj: Any) -> Any:
        ct_id = getattr(obj, ct_attname)
        if ct_id is None:
            return None
        model = gfk.get_content_type(id=ct_id, using=obj._state.db).model_class()
        return (model._meta.pk.get_prep_value(getattr(obj, gfk.fk_field)), model)

    return (
        ret_val,
        lambda obj: (obj.pk, obj.__class__),
        gfk_key,
        True,
        gfk.name,
        False,
    )
