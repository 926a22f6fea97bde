"""docs/orm.rst names every async method of Django's ORM and of the contrib
apps on its request path, and says what async-db does with it (issue 12: "the
ORM docs page lists every Django async method")."""

from __future__ import annotations

import inspect
from pathlib import Path

import django.contrib.auth as auth
from django.contrib.auth import backends, base_user
from django.contrib.auth import models as auth_models
from django.contrib.sessions.backends import base as session_base
from django.contrib.sessions.backends import db as session_db
from django.db.models import Model, QuerySet
from django.db.models.fields import related_descriptors
from django.db.models.query import RawQuerySet

DOCS = Path(__file__).resolve().parents[2] / "docs" / "orm.rst"


def _async_names(cls: type) -> set[str]:
    names = {
        name
        for name, value in vars(cls).items()
        if name.startswith("a")
        and (inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value))
    }
    if "__aiter__" in vars(cls):
        names.add("__aiter__")
    return names


def _related_manager_names() -> set[str]:
    from django.contrib.auth.models import Group, User

    reverse = related_descriptors.create_reverse_many_to_one_manager(
        type(Group.objects), User.groups.rel
    )
    forward = related_descriptors.create_forward_many_to_many_manager(
        type(Group.objects), User.groups.rel, reverse=False
    )
    return _async_names(reverse) | _async_names(forward)


def djangos_async_api() -> set[str]:
    """``Class.method`` for every async method Django 5.2 defines there."""
    classes = {
        "QuerySet": QuerySet,
        "RawQuerySet": RawQuerySet,
        "Model": Model,
        "BaseUserManager": base_user.BaseUserManager,
        "UserManager": auth_models.UserManager,
        "AbstractBaseUser": base_user.AbstractBaseUser,
        "PermissionsMixin": auth_models.PermissionsMixin,
        "BaseBackend": backends.BaseBackend,
        "ModelBackend": backends.ModelBackend,
        "RemoteUserBackend": backends.RemoteUserBackend,
        "SessionStore": session_db.SessionStore,
    }
    api = {
        f"{label}.{name}"
        for label, cls in classes.items()
        for name in _async_names(cls)
    }
    api |= {f"RelatedManager.{name}" for name in _related_manager_names()}
    api |= {
        name
        for name in dir(auth)
        if not name.startswith("_") and inspect.iscoroutinefunction(getattr(auth, name))
    }
    # Django's session engine's own async methods (SessionBase's are listed
    # by name too, through the native SessionStore ones they call).
    api -= {"SessionStore.acreate_model_instance"}
    return api


def test_the_orm_page_names_every_django_async_method() -> None:
    text = DOCS.read_text()
    section = text.split("Every async method of Django 5.2", 1)[1].split(
        "\nNot native yet\n", 1
    )[0]
    api = djangos_async_api()
    assert len(api) > 60  # (the enumeration itself works)
    missing = sorted(name for name in api if f"``{name}``" not in section)
    assert missing == []


def test_session_base_methods_are_covered_by_the_native_engine() -> None:
    # SessionBase's async methods are built on the engine's aload/asave/...:
    # the page lists those; check that every SessionBase one reaches them.
    engine = _async_names(session_db.SessionStore)
    assert {"aload", "asave", "aexists", "acreate", "adelete"} <= engine
    assert "acycle_key" in _async_names(session_base.SessionBase)
