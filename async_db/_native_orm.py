"""The global opt-in: every model's Django async methods, native.

With ``"async_db"`` in ``INSTALLED_APPS`` and ``ASYNC_DB = {"NATIVE_ORM":
True}``, :class:`async_db.apps.AsyncDbConfig` calls :func:`patch` when the app
registry is ready. It swaps, on Django's own classes, the async methods that
run the sync ORM in a thread (``sync_to_async``) for async-db's native twins,
so that models of ``django.contrib`` and third-party apps run them on the
task's async connection without any change to their code:

- ``django.db.models.QuerySet``: every method :class:`~async_db.models.
  AsyncQuerySet` defines (``__aiter__``, ``aget``, ``acount``, ``acreate``,
  ``aupdate``, ``adelete``, ... and the private helpers they call), so manager
  methods (Django's managers call the queryset's) are native too;
- ``django.db.models.query.RawQuerySet``: ``__aiter__`` (``async for`` over
  ``raw()``);
- ``django.db.models.Model``: ``asave``, ``adelete``, ``arefresh_from_db``
  (``async_db.models.base.asave_instance`` & co.: a model overriding
  ``save()``/``delete()``/``refresh_from_db()`` without an async twin is
  refused with ``NotSupportedError``, as ``native(instance)`` is);
- the related managers Django builds (``create_reverse_many_to_one_manager``,
  ``create_forward_many_to_many_manager`` and, with
  ``django.contrib.contenttypes`` installed, its
  ``create_generic_related_manager``): their async writes, through
  :func:`async_db.models.fields.related_descriptors.install_related_twins`
  (their reads are queryset methods, native already); the related managers
  already built are rebuilt;
- ``django.db.models.aprefetch_related_objects`` (also in
  ``django.db.models.query``): async-db's;
- ``django.contrib.auth.aauthenticate``/``alogin``/``alogout`` (when
  ``django.contrib.auth`` is installed): async-db's twins
  (:mod:`async_db.contrib.auth`), whose signals are sent in the task and whose
  ``update_last_login`` receiver is native.

Nothing else is touched: sync methods, Django's SQL compilation, the session
engines and middleware (see :mod:`async_db.contrib.sessions`). Without the
setting nothing of Django is patched. :func:`unpatch` restores every original
(the tests use it).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = ["enabled_in_settings", "is_patched", "patch", "unpatch"]

#: What patch() replaced: (owner, attribute name, original value or _MISSING).
_saved: list[tuple[Any, str, Any]] = []
_lock = threading.Lock()
_MISSING = object()


def enabled_in_settings() -> bool:
    """``settings.ASYNC_DB["NATIVE_ORM"]`` (False when unset), validated."""
    from django.conf import settings

    options = getattr(settings, "ASYNC_DB", {})
    if not isinstance(options, dict):
        raise ImproperlyConfigured(
            f"The ASYNC_DB setting must be a dict, not {type(options).__name__}."
        )
    enabled = options.get("NATIVE_ORM", False)
    if not isinstance(enabled, bool):
        raise ImproperlyConfigured(
            f'ASYNC_DB["NATIVE_ORM"] must be True or False, not {enabled!r}.'
        )
    return enabled


def is_patched() -> bool:
    """Whether :func:`patch` is in effect."""
    return bool(_saved)


def _swap(owner: Any, name: str, value: Any) -> None:
    _saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, value)


def _uses_zero_arg_super(function: Any) -> bool:
    """A function whose body calls ``super()`` is bound to its class: it can't
    be moved to another class."""
    code = getattr(function, "__code__", None)
    return code is not None and "__class__" in code.co_freevars


def _transplant(source: type, target: type) -> None:
    """``source``'s own methods (async-db's twins and their helpers) onto
    ``target``, Django's class; what uses ``super()`` stays behind."""
    for name, value in vars(source).items():
        if name.startswith("__") and name != "__aiter__":
            continue
        if not callable(value) or _uses_zero_arg_super(value):
            continue
        _swap(target, name, value)


def _model_methods() -> dict[str, Callable[..., Any]]:
    from async_db.models import base

    async def asave(self: Any, *args: Any, **kwargs: Any) -> None:
        """async-db: native ``Model.asave()`` (``asave_instance``)."""
        await base.asave_instance(self, *args, **kwargs)

    async def adelete(
        self: Any, using: str | None = None, keep_parents: bool = False
    ) -> tuple[int, dict[str, int]]:
        """async-db: native ``Model.adelete()`` (``adelete_instance``)."""
        return await base.adelete_instance(self, using=using, keep_parents=keep_parents)

    async def arefresh_from_db(
        self: Any,
        using: str | None = None,
        fields: Any = None,
        from_queryset: Any = None,
    ) -> None:
        """async-db: native ``Model.arefresh_from_db()`` (``arefresh_instance``)."""
        await base.arefresh_instance(
            self, using=using, fields=fields, from_queryset=from_queryset
        )

    asave.alters_data = True  # type: ignore[attr-defined]
    adelete.alters_data = True  # type: ignore[attr-defined]
    return {
        "asave": asave,
        "adelete": adelete,
        "arefresh_from_db": arefresh_from_db,
    }


def _with_related_twins(factory: Callable[..., type]) -> Callable[..., type]:
    """Django's related manager factory, whose classes get the native async
    writes (``install_related_twins``)."""
    from async_db.models.fields.related_descriptors import install_related_twins

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> type:
        cls = factory(*args, **kwargs)
        install_related_twins(cls)
        return cls

    return build


def _forget_related_manager_classes() -> None:
    """Drop the related manager classes Django's descriptors cached
    (``related_manager_cls``): the next access builds them with the factory
    in effect."""
    from django.apps import apps
    from django.db.models.fields.related_descriptors import (
        ReverseManyToOneDescriptor,
    )

    for model in apps.get_models(include_auto_created=True):
        for klass in model.__mro__:
            for value in vars(klass).values():
                if isinstance(value, ReverseManyToOneDescriptor):
                    vars(value).pop("related_manager_cls", None)


def _patch_related_managers() -> None:
    from django.db.models.fields import related_descriptors

    for name in (
        "create_reverse_many_to_one_manager",
        "create_forward_many_to_many_manager",
    ):
        _swap(
            related_descriptors,
            name,
            _with_related_twins(getattr(related_descriptors, name)),
        )
    from django.apps import apps

    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes import fields as generic

        _swap(
            generic,
            "create_generic_related_manager",
            _with_related_twins(generic.create_generic_related_manager),
        )
    _forget_related_manager_classes()


def _patch_auth() -> None:
    from django.apps import apps

    if not apps.is_installed("django.contrib.auth"):
        return
    import django.contrib.auth

    from async_db.contrib import auth

    _swap(django.contrib.auth, "aauthenticate", auth.aauthenticate)
    _swap(django.contrib.auth, "alogin", auth.alogin)
    _swap(django.contrib.auth, "alogout", auth.alogout)


def patch() -> None:
    """Make every model's Django async methods native (see the module
    docstring for the exact list). Idempotent."""
    import django.db.models
    from django.db.models import Model, QuerySet
    from django.db.models import query as django_query

    from async_db.models import query

    with _lock:
        if _saved:
            return
        try:
            _transplant(query.AsyncQuerySet, QuerySet)
            _transplant(query.AsyncRawQuerySet, django_query.RawQuerySet)
            for name, method in _model_methods().items():
                _swap(Model, name, method)
            _patch_related_managers()
            aprefetch = getattr(query, "aprefetch_related_objects", None)
            if aprefetch is not None:
                _swap(django_query, "aprefetch_related_objects", aprefetch)
                _swap(django.db.models, "aprefetch_related_objects", aprefetch)
            _patch_auth()
        except BaseException:
            _restore()
            raise


def _restore() -> None:
    while _saved:
        owner, name, original = _saved.pop()
        if original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _forget_related_manager_classes()


def unpatch() -> None:
    """Undo :func:`patch`: Django's classes and functions as they were."""
    with _lock:
        _restore()
