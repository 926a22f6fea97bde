"""Native ``asave()``, ``adelete()`` and ``arefresh_from_db()`` for models.

Async twins of ``django.db.models.base.Model.save``/``save_base``/
``_save_parents``/``_save_table``/``_do_update``/``_do_insert``/``delete``/
``refresh_from_db``, in Django's branch order, as functions of the instance
(so any model's instance can be saved natively, e.g. by ``acreate``), and as
methods of :class:`AsyncModelMixin` / :class:`AsyncModel`.
``transaction.atomic(savepoint=False)`` is ``async_atomic(savepoint=False)``;
``mark_for_rollback_on_error`` is async-db's. ``pre_save``/``post_save`` go
through ``async_db.models.signals.asend``.

The sync ``save()``/``delete()``/``refresh_from_db()`` are Django's, unchanged:
a deferred field or unloaded relation accessed from the event loop still
calls the sync ``refresh_from_db()``, which raises ``SynchronousOnlyOperation``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import django
from django.db import DatabaseError, NotSupportedError, models, router
from django.db.models import ExpressionWrapper, IntegerField, Max, Value
from django.db.models.constants import LOOKUP_SEP
from django.db.models.functions import Coalesce
from django.db.models.signals import post_save, pre_save

from async_db.models.manager import AsyncManager
from async_db.models.query import native
from async_db.models.signals import asend
from async_db.transaction import async_atomic, mark_for_rollback_on_error

__all__ = [
    "AsyncModel",
    "AsyncModelMixin",
    "NativeInstance",
    "adelete_object",
    "asave_object",
]

#: Version seam: Django 6.0 removed the positional arguments of save()/asave()
#: (RemovedInDjango60Warning, ``Model._parse_save_params``); 5.2 still
#: accepts them with a deprecation warning.
SAVE_ACCEPTS_POSITIONAL_ARGS = django.VERSION < (6, 0)


async def asave_object(
    self: Any,
    *,
    force_insert: Any = False,
    force_update: bool = False,
    using: str | None = None,
    update_fields: Any = None,
) -> None:
    """Async twin of ``Model.save()`` for any model instance. A model whose
    class overrides ``save()`` without an ``asave()`` of async-db's is refused:
    its ``save()`` is sync code that this native path would skip."""
    if isinstance(self, AsyncModelMixin):
        await self.asave(
            force_insert=force_insert,
            force_update=force_update,
            using=using,
            update_fields=update_fields,
        )
        return
    save = _native_save(type(self))
    if save is None:
        raise NotSupportedError(
            f"{type(self).__qualname__} overrides save(); a native save would "
            f"skip it. Give the model an async asave() (AsyncModelMixin) that "
            f"does the same work."
        )
    await save(self, force_insert, force_update, using, update_fields)


async def _asave(
    self: Any,
    force_insert: Any,
    force_update: bool,
    using: str | None,
    update_fields: Any,
) -> None:
    """Async twin of ``Model.save()`` (after its positional-args handling)."""
    self._prepare_related_fields_for_save(operation_name="save")

    using = using or router.db_for_write(self.__class__, instance=self)
    if force_insert and (force_update or update_fields):
        raise ValueError("Cannot force both insert and updating in model saving.")

    deferred_non_generated_fields = {
        f.attname
        for f in self._meta.concrete_fields
        if f.attname not in self.__dict__ and f.generated is False
    }
    if update_fields is not None:
        # If update_fields is empty, skip the save. We do also check for
        # no-op saves later on for inheritance cases. This bailout is
        # still needed for skipping signal sending.
        if not update_fields:
            return

        update_fields = frozenset(update_fields)
        field_names = self._meta._non_pk_concrete_field_names
        not_updatable_fields = update_fields.difference(field_names)

        if not_updatable_fields:
            raise ValueError(
                "The following fields do not exist in this model, are m2m "
                "fields, primary keys, or are non-concrete fields: {}".format(
                    ", ".join(not_updatable_fields)
                )
            )

    # If saving to the same database, and this model is deferred, then
    # automatically do an "update_fields" save on the loaded fields.
    elif not force_insert and deferred_non_generated_fields and using == self._state.db:
        field_names = set()
        pk_fields = self._meta.pk_fields
        for field in self._meta.concrete_fields:
            if field not in pk_fields and not hasattr(field, "through"):
                field_names.add(field.attname)
        loaded_fields = field_names.difference(deferred_non_generated_fields)
        if loaded_fields:
            update_fields = frozenset(loaded_fields)

    await asave_base(
        self,
        using=using,
        force_insert=force_insert,
        force_update=force_update,
        update_fields=update_fields,
    )


async def asave_base(
    self: Any,
    raw: bool = False,
    force_insert: Any = False,
    force_update: bool = False,
    using: str | None = None,
    update_fields: Any = None,
) -> None:
    """Async twin of ``Model.save_base()``: signals, then the tables, in one
    ``async_atomic(savepoint=False)`` when there are parents."""
    using = using or router.db_for_write(self.__class__, instance=self)
    assert not (force_insert and (force_update or update_fields))
    assert update_fields is None or update_fields
    cls = origin = self.__class__
    # Skip proxies, but keep the origin as the proxy model.
    if cls._meta.proxy:
        cls = cls._meta.concrete_model
    meta = cls._meta
    if not meta.auto_created:
        await asend(
            pre_save,
            sender=origin,
            instance=self,
            raw=raw,
            using=using,
            update_fields=update_fields,
        )
    # A transaction isn't needed if one query is issued.
    context_manager: AbstractAsyncContextManager[Any]
    if meta.parents:
        context_manager = async_atomic(using=using, savepoint=False)
    else:
        context_manager = mark_for_rollback_on_error(using=using)
    async with context_manager:
        parent_inserted = False
        if not raw:
            # Validate force insert only when parents are inserted.
            force_insert = self._validate_force_insert(force_insert)
            parent_inserted = await _asave_parents(
                self, cls, using, update_fields, force_insert
            )
        updated = await _asave_table(
            self,
            raw,
            cls,
            force_insert or parent_inserted,
            force_update,
            using,
            update_fields,
        )
    # Store the database on which the object was saved
    self._state.db = using
    # Once saved, this is no longer a to-be-added instance.
    self._state.adding = False

    # Signal that the save is complete
    if not meta.auto_created:
        await asend(
            post_save,
            sender=origin,
            instance=self,
            created=(not updated),
            update_fields=update_fields,
            raw=raw,
            using=using,
        )


async def _asave_parents(
    self: Any,
    cls: Any,
    using: str,
    update_fields: Any,
    force_insert: Any,
    updated_parents: dict[Any, bool] | None = None,
) -> bool:
    """Async twin of ``Model._save_parents()``."""
    meta = cls._meta
    inserted = False
    if updated_parents is None:
        updated_parents = {}
    for parent, field in meta.parents.items():
        # Make sure the link fields are synced between parent and self.
        if (
            field
            and getattr(self, parent._meta.pk.attname) is None
            and getattr(self, field.attname) is not None
        ):
            setattr(self, parent._meta.pk.attname, getattr(self, field.attname))
        if (parent_updated := updated_parents.get(parent)) is None:
            parent_inserted = await _asave_parents(
                self,
                cls=parent,
                using=using,
                update_fields=update_fields,
                force_insert=force_insert,
                updated_parents=updated_parents,
            )
            updated = await _asave_table(
                self,
                cls=parent,
                using=using,
                update_fields=update_fields,
                force_insert=parent_inserted or issubclass(parent, force_insert),
            )
            if not updated:
                inserted = True
            updated_parents[parent] = updated
        elif not parent_updated:
            inserted = True
        # Set the parent's PK value to self.
        if field:
            setattr(self, field.attname, self._get_pk_val(parent._meta))
            # Invalidate the related object cache, as Django does.
            if field.is_cached(self):
                field.delete_cached_value(self)
    return inserted


async def _asave_table(
    self: Any,
    raw: bool = False,
    cls: Any = None,
    force_insert: Any = False,
    force_update: bool = False,
    using: str | None = None,
    update_fields: Any = None,
) -> bool:
    """Async twin of ``Model._save_table()``: UPDATE if possible, else INSERT."""
    meta = cls._meta
    pk_fields = meta.pk_fields
    non_pks_non_generated = [
        f for f in meta.local_concrete_fields if f not in pk_fields and not f.generated
    ]

    if update_fields:
        non_pks_non_generated = [
            f
            for f in non_pks_non_generated
            if f.name in update_fields or f.attname in update_fields
        ]

    if not self._is_pk_set(meta):
        pk_val = meta.pk.get_pk_value_on_save(self)
        setattr(self, meta.pk.attname, pk_val)
    pk_set = self._is_pk_set(meta)
    if not pk_set and (force_update or update_fields):
        raise ValueError("Cannot force an update in save() with no primary key.")
    updated = False
    # Skip an UPDATE when adding an instance and primary key has a default.
    if (
        not raw
        and not force_insert
        and not force_update
        and self._state.adding
        and all(f.has_default() or f.has_db_default() for f in meta.pk_fields)
    ):
        force_insert = True
    # If possible, try an UPDATE. If that doesn't update anything, do an INSERT.
    if pk_set and not force_insert:
        base_qs = native(cls._base_manager.using(using))
        values = [
            (
                f,
                None,
                (getattr(self, f.attname) if raw else f.pre_save(self, False)),
            )
            for f in non_pks_non_generated
        ]
        forced_update = update_fields or force_update
        pk_val = self._get_pk_val(meta)
        updated = await _ado_update(
            self, base_qs, using, pk_val, values, update_fields, forced_update
        )
        if force_update and not updated:
            raise DatabaseError("Forced update did not affect any rows.")
        if update_fields and not updated:
            raise DatabaseError("Save with update_fields did not affect any rows.")
    if not updated:
        if meta.order_with_respect_to:
            # If this is a model with an order_with_respect_to
            # autopopulate the _order field
            field = meta.order_with_respect_to
            filter_args = field.get_filter_kwargs_for_object(self)
            self._order = (
                await native(cls._base_manager.using(using))
                .filter(**filter_args)
                .aaggregate(
                    _order__max=Coalesce(
                        ExpressionWrapper(
                            Max("_order") + Value(1), output_field=IntegerField()
                        ),
                        Value(0),
                    ),
                )
            )["_order__max"]
        fields = [
            f
            for f in meta.local_concrete_fields
            if not f.generated and (pk_set or f is not meta.auto_field)
        ]
        returning_fields = meta.db_returning_fields
        results = await _ado_insert(
            self, cls._base_manager, using, fields, returning_fields, raw
        )
        if results:
            for value, field in zip(results[0], returning_fields, strict=False):
                setattr(self, field.attname, value)
    return updated


async def _ado_update(
    self: Any,
    base_qs: Any,
    using: str | None,
    pk_val: Any,
    values: Any,
    update_fields: Any,
    forced_update: Any,
) -> bool:
    """Async twin of ``Model._do_update()``."""
    filtered = base_qs.filter(pk=pk_val)
    if not values:
        # Saving a model in an inheritance chain where update_fields targets
        # no field of this model, or a model with just a PK: check that the
        # PK still exists (Django's comment, shortened).
        return update_fields is not None or bool(await filtered.aexists())
    if self._meta.select_on_save and not forced_update:
        return bool(
            await filtered.aexists()
            and (await filtered._aupdate(values) > 0 or await filtered.aexists())
        )
    return bool(await filtered._aupdate(values) > 0)


async def _ado_insert(
    self: Any,
    manager: Any,
    using: str | None,
    fields: Any,
    returning_fields: Any,
    raw: bool,
) -> list[Any]:
    """Async twin of ``Model._do_insert()``."""
    result: list[Any] = await native(manager)._ainsert(
        [self],
        fields=fields,
        returning_fields=returning_fields,
        using=using,
        raw=raw,
    )
    return result


async def adelete_object(
    self: Any, using: str | None = None, keep_parents: bool = False
) -> tuple[int, dict[str, int]]:
    """Async twin of ``Model.delete()``: the cascade is collected and deleted
    natively (``async_db.models.deletion.Collector``)."""
    from async_db.models.deletion import Collector

    if not self._is_pk_set():
        raise ValueError(
            f"{self._meta.object_name} object can't be deleted because its "
            f"{self._meta.pk.attname} attribute is set to None."
        )
    using = using or router.db_for_write(self.__class__, instance=self)
    collector = Collector(using=using, origin=self)
    await collector.acollect([self], keep_parents=keep_parents)
    return await collector.adelete()


async def arefresh_object(
    self: Any, using: str | None = None, fields: Any = None, from_queryset: Any = None
) -> None:
    """Async twin of ``Model.refresh_from_db()``."""
    if fields is None:
        self._prefetched_objects_cache = {}
    else:
        prefetched_objects_cache: Any = getattr(self, "_prefetched_objects_cache", ())
        fields = set(fields)
        for field in fields.copy():
            if field in prefetched_objects_cache:
                del prefetched_objects_cache[field]
                fields.remove(field)
        if not fields:
            return
        if any(LOOKUP_SEP in f for f in fields):
            raise ValueError(
                f'Found "{LOOKUP_SEP}" in fields argument. Relations and '
                f"transforms are not allowed in fields."
            )

    if from_queryset is None:
        hints = {"instance": self}
        from_queryset = self.__class__._base_manager.db_manager(using, hints=hints)
    elif using is not None:
        from_queryset = from_queryset.using(using)

    db_instance_qs = native(from_queryset).filter(pk=self.pk)

    # Use provided fields, if not set then reload all non-deferred fields.
    deferred_fields = self.get_deferred_fields()
    if fields is not None:
        db_instance_qs = db_instance_qs.only(*fields)
    elif deferred_fields:
        db_instance_qs = db_instance_qs.only(
            *{
                f.attname
                for f in self._meta.concrete_fields
                if f.attname not in deferred_fields
            }
        )

    db_instance = await db_instance_qs.aget()
    non_loaded_fields = db_instance.get_deferred_fields()
    for field in self._meta.concrete_fields:
        if field.attname in non_loaded_fields:
            # This field wasn't refreshed - skip ahead.
            continue
        setattr(self, field.attname, getattr(db_instance, field.attname))
        # Clear or copy cached foreign keys.
        if field.is_relation:
            if field.is_cached(db_instance):
                field.set_cached_value(self, field.get_cached_value(db_instance))
            elif field.is_cached(self):
                field.delete_cached_value(self)

    # Clear cached relations.
    for rel in self._meta.related_objects:
        if (fields is None or rel.name in fields) and rel.is_cached(self):
            rel.delete_cached_value(self)

    # Clear cached private relations.
    for field in self._meta.private_fields:
        if (
            (fields is None or field.name in fields)
            and field.is_relation
            and field.is_cached(self)
        ):
            field.delete_cached_value(self)

    self._state.db = db_instance._state.db


class AsyncModelMixin:
    """Native ``asave()``, ``adelete()`` and ``arefresh_from_db()`` for a model
    that must keep another base class: ``class Book(AsyncModelMixin, Base)``
    (before the model base), and declare ``objects = AsyncManager()``."""

    async def asave(
        self,
        *args: Any,
        force_insert: Any = False,
        force_update: bool = False,
        using: str | None = None,
        update_fields: Any = None,
    ) -> None:
        """Async twin of ``Model.save()``: same SQL, on the task's connection."""
        if args and not SAVE_ACCEPTS_POSITIONAL_ARGS:
            raise TypeError(
                f"{type(self).__qualname__}.asave() takes keyword arguments only."
            )
        if args:  # RemovedInDjango60Warning, as Django 5.2's asave().
            force_insert, force_update, using, update_fields = self._parse_save_params(  # type: ignore[attr-defined]
                *args,
                method_name="asave",
                force_insert=force_insert,
                force_update=force_update,
                using=using,
                update_fields=update_fields,
            )
        # The twin of the class's save(): Model.save()'s, or that of a Django
        # override such as AbstractBaseUser.save() (custom user models). A
        # save() of the user's own is theirs to mirror in an asave() override.
        save = _native_save(type(self)) or _asave
        await save(self, force_insert, force_update, using, update_fields)

    asave.alters_data = True  # type: ignore[attr-defined]

    async def adelete(
        self, using: str | None = None, keep_parents: bool = False
    ) -> tuple[int, dict[str, int]]:
        """Async twin of ``Model.delete()``, cascades included: returns
        Django's ``(total, {model label: count})``."""
        return await adelete_object(self, using=using, keep_parents=keep_parents)

    adelete.alters_data = True  # type: ignore[attr-defined]

    async def arefresh_from_db(
        self, using: str | None = None, fields: Any = None, from_queryset: Any = None
    ) -> None:
        """Async twin of ``Model.refresh_from_db()``."""
        await arefresh_object(
            self, using=using, fields=fields, from_queryset=from_queryset
        )


class AsyncModel(AsyncModelMixin, models.Model):
    """An abstract model with ``objects = AsyncManager()`` and native
    ``asave()``, ``adelete()`` and ``arefresh_from_db()``."""

    objects = AsyncManager()

    class Meta:
        abstract = True


# ##### native(instance) and the model methods of the global opt-in #####
#
# Issue 12, item 4: any model's instance gets native asave(), adelete() and
# arefresh_from_db(). A model class that overrides save()/delete()/
# refresh_from_db() is refused (its sync override would be skipped), except
# for the overrides of Django's own models that have an async twin below.

_SaveTwin = Callable[[Any, Any, bool, "str | None", Any], Awaitable[None]]


async def _asave_abstract_base_user(
    self: Any,
    force_insert: Any,
    force_update: bool,
    using: str | None,
    update_fields: Any,
) -> None:
    """Async twin of ``AbstractBaseUser.save()``: ``Model.save()``, then
    ``password_validation.password_changed()`` (no query in Django's
    validators) for a password set since the last save."""
    from django.contrib.auth import password_validation

    await _asave(self, force_insert, force_update, using, update_fields)
    if self._password is not None:
        password_validation.password_changed(self._password, self)
        self._password = None


@functools.cache
def _save_twins() -> dict[Any, _SaveTwin]:
    """Django's ``save()`` overrides (the functions) -> their async twins.
    Built when first needed (the app registry is ready by then):
    ``django.contrib.auth`` may not be installed."""
    twins: dict[Any, _SaveTwin] = {models.Model.save: _asave}
    from django.apps import apps

    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth.base_user import AbstractBaseUser

        twins[AbstractBaseUser.save] = _asave_abstract_base_user
    return twins


def _defining(cls: type, name: str) -> Any:
    """``name`` as the first class of ``cls``'s MRO that defines it has it."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    raise AttributeError(name)  # pragma: no cover - every model has them


def _native_save(cls: type) -> _SaveTwin | None:
    """The async twin of ``cls.save()`` (``Model.save()``'s, or that of a
    Django model's override), or None when the class overrides ``save()``
    with code async-db cannot run natively."""
    return _save_twins().get(_defining(cls, "save"))


def _refuse_override(instance: Any, name: str) -> None:
    """A model that overrides ``name()`` (and isn't an ``AsyncModelMixin``,
    whose ``a<name>`` is the user's to keep in step) is refused: the native
    twin of ``Model.<name>()`` would skip the override."""
    cls = type(instance)
    if isinstance(instance, AsyncModelMixin):
        return
    if _defining(cls, name) is not vars(models.Model)[name]:
        raise NotSupportedError(
            f"{cls.__qualname__} overrides {name}(); a native a{name}() would "
            f"skip it. Give the model an async a{name}() (AsyncModelMixin) that "
            f"does the same work."
        )


async def asave_instance(
    instance: Any,
    *args: Any,
    force_insert: Any = False,
    force_update: bool = False,
    using: str | None = None,
    update_fields: Any = None,
) -> None:
    """Native ``instance.asave()`` for any model: the async twin of its
    class's ``save()`` (see :func:`asave_object`)."""
    if args and not SAVE_ACCEPTS_POSITIONAL_ARGS:
        raise TypeError(
            f"{type(instance).__qualname__}.asave() takes keyword arguments only."
        )
    if args:  # RemovedInDjango60Warning, as Django 5.2's asave().
        force_insert, force_update, using, update_fields = instance._parse_save_params(
            *args,
            method_name="asave",
            force_insert=force_insert,
            force_update=force_update,
            using=using,
            update_fields=update_fields,
        )
    await asave_object(
        instance,
        force_insert=force_insert,
        force_update=force_update,
        using=using,
        update_fields=update_fields,
    )


async def adelete_instance(
    instance: Any, using: str | None = None, keep_parents: bool = False
) -> tuple[int, dict[str, int]]:
    """Native ``instance.adelete()`` for any model (``Model.delete()``'s twin,
    :func:`adelete_object`); a model overriding ``delete()`` is refused."""
    if isinstance(instance, AsyncModelMixin):
        return await instance.adelete(using=using, keep_parents=keep_parents)
    _refuse_override(instance, "delete")
    return await adelete_object(instance, using=using, keep_parents=keep_parents)


async def arefresh_instance(
    instance: Any,
    using: str | None = None,
    fields: Any = None,
    from_queryset: Any = None,
) -> None:
    """Native ``instance.arefresh_from_db()`` for any model (the twin of
    ``Model.refresh_from_db()``, :func:`arefresh_object`), in place; a model
    overriding ``refresh_from_db()`` is refused."""
    if isinstance(instance, AsyncModelMixin):
        await instance.arefresh_from_db(
            using=using, fields=fields, from_queryset=from_queryset
        )
        return
    _refuse_override(instance, "refresh_from_db")
    await arefresh_object(
        instance, using=using, fields=fields, from_queryset=from_queryset
    )


class NativeInstance:
    """What ``native(instance)`` returns: the instance's ``asave()``,
    ``adelete()`` and ``arefresh_from_db()``, native, acting on ``instance``
    itself (``await native(user).arefresh_from_db(fields=["last_login"])``
    updates ``user``). Any model, ``AsyncModel`` or not."""

    __slots__ = ("instance",)

    def __init__(self, instance: models.Model) -> None:
        self.instance = instance

    def __repr__(self) -> str:
        return f"<native {self.instance!r}>"

    async def asave(
        self,
        *args: Any,
        force_insert: Any = False,
        force_update: bool = False,
        using: str | None = None,
        update_fields: Any = None,
    ) -> None:
        """Async twin of ``Model.save()`` on the instance."""
        await asave_instance(
            self.instance,
            *args,
            force_insert=force_insert,
            force_update=force_update,
            using=using,
            update_fields=update_fields,
        )

    async def adelete(
        self, using: str | None = None, keep_parents: bool = False
    ) -> tuple[int, dict[str, int]]:
        """Async twin of ``Model.delete()`` on the instance."""
        return await adelete_instance(
            self.instance, using=using, keep_parents=keep_parents
        )

    async def arefresh_from_db(
        self, using: str | None = None, fields: Any = None, from_queryset: Any = None
    ) -> None:
        """Async twin of ``Model.refresh_from_db()`` on the instance."""
        await arefresh_instance(
            self.instance, using=using, fields=fields, from_queryset=from_queryset
        )
