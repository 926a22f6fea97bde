"""prefetch_related, Prefetch and aprefetch_related_objects, natively.

Parity with the sync ORM on committed rows: the same objects in the same
order, the same caches (``_prefetched_objects_cache`` querysets and their
results, ``to_attr`` lists, ``fields_cache``, compared recursively), and the
same queries (the async wrapper's ``queries`` log with
``force_debug_cursor`` against Django's ``CaptureQueriesContext``); the native
side opens no sync connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import NotSupportedError, connection, connections
from django.db.models import Model, Prefetch, QuerySet, prefetch_related_objects
from django.test.utils import CaptureQueriesContext

from async_db import async_atomic, async_connections
from async_db.models import aprefetch_related_objects, native
from async_db.test import isolated
from tests.orm_parity import SyncConnectionCounter, native_and_sync, normal, run_sync
from tests.ormapp.models import (
    Author,
    Book,
    Country,
    RelArticle,
    RelChapter,
    RelClub,
    RelCover,
    RelMembership,
    RelNote,
    RelPerson,
    RelShelf,
    RelTag,
    RelVolume,
)

pytestmark = pytest.mark.usefixtures("orm", "rel_rows")


@pytest.fixture(scope="module")
def rel_rows(orm_tables: None) -> Iterator[None]:
    """Committed rows of the relations models (the sync side must see them)."""
    try:
        s1, s2, _ = RelShelf.objects.bulk_create(
            [RelShelf(name="pS1"), RelShelf(name="pS2"), RelShelf(name="pS3")]
        )
        v1, _, v3, _ = RelVolume.objects.bulk_create(
            [
                RelVolume(title="pV1", shelf=s1),
                RelVolume(title="pV2", shelf=s1),
                RelVolume(title="pV3", shelf=s2),
                RelVolume(title="pV4"),
            ]
        )
        RelChapter.objects.bulk_create(
            [
                RelChapter(title="c1", number=1, volume=v1),
                RelChapter(title="c2", number=2, volume=v1),
                RelChapter(title="c3", number=1, volume=v3),
            ]
        )
        RelCover.objects.bulk_create(
            [RelCover(colour="red", volume=v1), RelCover(colour="blue", volume=v3)]
        )
        t1, t2, t3 = RelTag.objects.bulk_create(
            [RelTag(name="pT1"), RelTag(name="pT2"), RelTag(name="pT3")]
        )
        a1, a2, _ = RelArticle.objects.bulk_create(
            [RelArticle(title="pA1"), RelArticle(title="pA2"), RelArticle(title="pA3")]
        )
        a1.tags.set([t1, t2])
        a2.tags.set([t2, t3])
        p1, p2, p3 = RelPerson.objects.bulk_create(
            [RelPerson(name="pP1"), RelPerson(name="pP2"), RelPerson(name="pP3")]
        )
        p1.friends.set([p2, p3])
        k1, k2 = RelClub.objects.bulk_create([RelClub(name="pK1"), RelClub(name="pK2")])
        RelMembership.objects.bulk_create(
            [
                RelMembership(person=p1, club=k1, role="chair"),
                RelMembership(person=p2, club=k1),
                RelMembership(person=p2, club=k2),
            ]
        )
        from django.contrib.auth.models import Group, User
        from django.contrib.contenttypes.models import ContentType

        group = Group.objects.create(name="prefetch-readers")
        user = User.objects.create(username="prefetch-user")
        user.groups.add(group)
        shelf_type = ContentType.objects.get_for_model(RelShelf)
        volume_type = ContentType.objects.get_for_model(RelVolume)
        RelNote.objects.bulk_create(
            [
                RelNote(text="n1", content_type=shelf_type, object_id=s1.pk),
                RelNote(text="n2", content_type=shelf_type, object_id=s2.pk),
                # A second content type: one query per type.
                RelNote(text="n3", content_type=volume_type, object_id=v1.pk),
            ]
        )
    finally:
        connections.close_all()
    try:
        yield
    finally:
        try:
            from django.contrib.auth.models import Group, User

            User.objects.filter(username="prefetch-user").delete()
            Group.objects.filter(name="prefetch-readers").delete()
            for model in (
                RelNote,
                RelMembership,
                RelClub,
                RelPerson,
                RelArticle,
                RelTag,
            ):
                model.objects.all().delete()
            for model in (RelCover, RelChapter, RelVolume, RelShelf):
                model.objects.all().delete()
        finally:
            connections.close_all()


def pnormal(value: Any, _seen: frozenset[int] = frozenset()) -> Any:
    """A comparable form with the prefetch caches: each model's fields,
    ``fields_cache``, ``to_attr`` values and ``_prefetched_objects_cache``
    (queryset class and its results), recursively."""
    if isinstance(value, Model):
        if id(value) in _seen:
            return ("ref", value._meta.label, value.pk)
        seen = _seen | {id(value)}
        fields = {
            k: pnormal(v, seen)
            for k, v in sorted(value.__dict__.items())
            if k not in ("_state", "_prefetched_objects_cache")
        }
        cached = {
            name: pnormal(obj, seen)
            for name, obj in sorted(value._state.fields_cache.items())
        }
        prefetched = {
            name: pnormal(qs, seen)
            for name, qs in sorted(
                getattr(value, "_prefetched_objects_cache", {}).items()
            )
        }
        return ("model", value._meta.label, fields, cached, prefetched)
    if isinstance(value, QuerySet):
        assert value._result_cache is not None, "a prefetched queryset is evaluated"
        return ("qs", type(value).__name__, pnormal(value._result_cache, _seen))
    if isinstance(value, list):
        return ("list", [pnormal(v, _seen) for v in value])
    return normal(value)


def _transaction_free(statements: list[str]) -> list[str]:
    skip = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    return [s for s in statements if not s.upper().startswith(skip)]


async def prefetch_parity(
    make: Callable[[], Any],
    evaluate_native: Callable[[Any], Any] | None = None,
    evaluate_sync: Callable[[Any], Any] | None = None,
    in_atomic: bool = False,
) -> tuple[list[Any], int]:
    """Evaluate ``make()`` natively and with the sync ORM; same objects, same
    caches, same queries. Return the native objects and the query count."""
    conn = async_connections["default"]

    async def default_native(qs: Any) -> list[Any]:
        return [obj async for obj in native(qs)]

    native_evaluate = evaluate_native or default_native
    sync_evaluate = evaluate_sync or list

    async def native_eval() -> tuple[list[Any], list[str]]:
        conn.force_debug_cursor = True
        start = len(conn.queries_log)
        try:
            if in_atomic:
                async with async_atomic():
                    result = await native_evaluate(make())
            else:
                result = await native_evaluate(make())
        finally:
            conn.force_debug_cursor = False
        return result, [q["sql"] for q in list(conn.queries_log)[start:]]

    def sync_eval() -> tuple[list[Any], list[str]]:
        with CaptureQueriesContext(connection) as captured:
            result = sync_evaluate(make())
        return result, [q["sql"] for q in captured.captured_queries]

    (native_result, native_sql), (sync_result, sync_sql) = await native_and_sync(
        native_eval, sync_eval
    )
    assert pnormal(native_result) == pnormal(sync_result)
    native_sql = _transaction_free(native_sql)
    assert len(native_sql) == len(sync_sql), (native_sql, sync_sql)
    return native_result, len(native_sql)


# ##### prefetch_related on querysets #####


def _content_types() -> QuerySet[Any]:
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.all()  # a plain Django queryset


def _users() -> QuerySet[Any]:
    from django.contrib.auth.models import User

    return User.objects.filter(username="prefetch-user")


LOOKUPS: dict[str, tuple[Callable[[], QuerySet[Any]], int]] = {
    # name: (queryset, queries: 1 + one per prefetch level)
    "reverse_fk": (
        lambda: Author.objects.order_by("name").prefetch_related("book_set"),
        2,
    ),
    "forward_fk": (
        lambda: Book.objects.order_by("title").prefetch_related("author"),
        2,
    ),
    "forward_fk_nullable": (
        lambda: Book.objects.order_by("title").prefetch_related("editor"),
        2,
    ),
    "nested_reverse_forward": (
        lambda: Author.objects.order_by("name").prefetch_related("book_set__editor"),
        3,
    ),
    "nested_two_reverse": (
        lambda: Country.objects.prefetch_related("author_set__book_set"),
        3,
    ),
    "two_lookups": (
        lambda: Author.objects.order_by("name").prefetch_related("country", "edited"),
        3,
    ),
    "prefetch_queryset": (
        lambda: Author.objects.order_by("name").prefetch_related(
            Prefetch("book_set", queryset=Book.objects.filter(pages__gte=200))
        ),
        2,
    ),
    "prefetch_to_attr": (
        lambda: Author.objects.order_by("name").prefetch_related(
            Prefetch(
                "book_set",
                queryset=Book.objects.order_by("-pages"),
                to_attr="books_by_pages",
            )
        ),
        2,
    ),
    "prefetch_sliced": (
        lambda: Author.objects.order_by("name").prefetch_related(
            Prefetch(
                "book_set",
                queryset=Book.objects.order_by("title")[:1],
                to_attr="first_book",
            )
        ),
        2,
    ),
    "prefetch_to_attr_nested": (
        lambda: Country.objects.prefetch_related(
            Prefetch("author_set", to_attr="authors"),
            "authors__book_set",
        ),
        3,
    ),
    "select_related_then_prefetch": (
        lambda: (
            Book.objects.order_by("title")
            .select_related("author")
            .prefetch_related("author__country")
        ),
        2,
    ),
    "nullable_fk_to_reverse": (
        lambda: RelVolume.objects.prefetch_related("shelf__volumes"),
        3,
    ),
    "non_null_reverse": (lambda: RelVolume.objects.prefetch_related("chapters"), 2),
    "reverse_one_to_one": (lambda: RelVolume.objects.prefetch_related("cover"), 2),
    "forward_one_to_one": (
        lambda: RelCover.objects.order_by("colour").prefetch_related("volume"),
        2,
    ),
    "m2m_forward": (lambda: RelArticle.objects.prefetch_related("tags"), 2),
    "m2m_reverse": (lambda: RelTag.objects.prefetch_related("articles"), 2),
    "m2m_symmetrical": (lambda: RelPerson.objects.prefetch_related("friends"), 2),
    "m2m_through_nested": (
        lambda: RelClub.objects.prefetch_related("members__clubs"),
        3,
    ),
    "m2m_prefetch_queryset_to_attr": (
        lambda: RelArticle.objects.prefetch_related(
            Prefetch("tags", queryset=RelTag.objects.exclude(name="pT1"), to_attr="t")
        ),
        2,
    ),
    "prefetch_queryset_with_its_own_prefetch": (
        lambda: RelShelf.objects.prefetch_related(
            Prefetch("volumes", queryset=RelVolume.objects.prefetch_related("chapters"))
        ),
        3,
    ),
    "forward_fk_to_a_plain_manager": (
        lambda: RelNote.objects.order_by("text").prefetch_related("content_type"),
        2,
    ),
    "prefetch_plain_queryset": (
        lambda: RelNote.objects.order_by("text").prefetch_related(
            Prefetch("content_type", queryset=_content_types())
        ),
        2,
    ),
    "models_you_do_not_own": (  # contrib.auth: plain managers, native()
        lambda: _users().prefetch_related("groups", "user_permissions"),
        3,
    ),
    "three_levels": (
        lambda: RelShelf.objects.prefetch_related("volumes__chapters__volume__cover"),
        4,
    ),
    # Generic relations (contrib.contenttypes); content types cached, as in a
    # warm process (the cold cache: test_generic_prefetch_with_a_cold_cache).
    "generic_relation": (lambda: RelShelf.objects.prefetch_related("notes"), 2),
    "generic_relation_nested": (
        lambda: RelVolume.objects.order_by("title").prefetch_related("shelf__notes"),
        3,
    ),
    "generic_relation_prefetch_to_attr": (
        lambda: RelShelf.objects.prefetch_related(
            Prefetch("notes", queryset=RelNote.objects.filter(text="n1"), to_attr="n")
        ),
        2,
    ),
    "generic_foreign_key": (  # two content types: one query each
        lambda: RelNote.objects.order_by("text").prefetch_related("content_object"),
        3,
    ),
    "generic_foreign_key_nested": (
        lambda: (
            RelNote.objects.filter(text__in=["n1", "n2"])
            .order_by("text")
            .prefetch_related("content_object__notes")
        ),
        3,
    ),
    "generic_prefetch": (
        lambda: RelNote.objects.order_by("text").prefetch_related(_generic_prefetch()),
        3,
    ),
}


def _generic_prefetch() -> Any:
    from django.contrib.contenttypes.prefetch import GenericPrefetch

    return GenericPrefetch(
        "content_object",
        [RelShelf.objects.filter(name="pS1"), RelVolume.objects.all()],
    )


@pytest.fixture(autouse=True)
def warm_content_types() -> None:
    """Both sides find the content types cached (the sync side would find
    them cached by the native side otherwise, and run fewer queries)."""
    from django.contrib.contenttypes.models import ContentType

    try:
        ContentType.objects.get_for_models(RelShelf, RelVolume, RelNote)
    finally:
        connections.close_all()


@pytest.mark.parametrize("name", list(LOOKUPS))
async def test_prefetch_related_parity(name: str) -> None:
    make, queries = LOOKUPS[name]
    objs, count = await prefetch_parity(make)
    assert objs, "the seed rows are there"
    assert count == queries


@pytest.mark.parametrize(
    "name", ["reverse_fk", "nested_two_reverse", "m2m_through_nested", "three_levels"]
)
async def test_prefetch_related_parity_inside_async_atomic(name: str) -> None:
    make, queries = LOOKUPS[name]
    _, count = await prefetch_parity(make, in_atomic=True)
    assert count == queries


async def test_prefetched_caches_answer_without_queries() -> None:
    conn = async_connections["default"]
    [ann] = [
        a
        async for a in Author.objects.filter(name="Ann").prefetch_related(
            "book_set__editor"
        )
    ]
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        titles = [b.title async for b in ann.book_set.all()]
        count = await ann.book_set.acount()
        editors = [b.editor.name if b.editor else None for b in ann.book_set.all()]
        authors = {b.author is ann for b in ann.book_set.all()}
    finally:
        conn.force_debug_cursor = False
    assert len(conn.queries_log) == start
    assert sorted(titles) == ["A1", "A2"] and count == 2
    assert sorted(editors, key=str) == ["Bob", None]
    assert authors == {True}


async def test_prefetch_errors_are_djangos() -> None:
    async def native_error(qs: Any) -> Any:
        try:
            return [obj async for obj in native(qs)]
        except (AttributeError, ValueError) as exc:
            return [type(exc).__name__, str(exc)]

    def sync_error(qs: Any) -> Any:
        try:
            return list(qs)
        except (AttributeError, ValueError) as exc:
            return [type(exc).__name__, str(exc)]

    for index, make in enumerate(
        (
            lambda: Author.objects.prefetch_related("nothing"),
            lambda: Author.objects.prefetch_related("name"),
            lambda: Author.objects.prefetch_related(
                Prefetch("book_set", queryset=Book.objects.all()),
                Prefetch("book_set", queryset=Book.objects.filter(pages=1)),
            ),
        )
    ):
        result, _ = await prefetch_parity(make, native_error, sync_error)
        assert result[0] in ("AttributeError", "ValueError"), (index, result)


# ##### aiterator and aprefetch_related_objects #####


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
async def test_aiterator_prefetches_per_chunk(chunk_size: int) -> None:
    async def native_iter(qs: Any) -> list[Any]:
        return [obj async for obj in qs.aiterator(chunk_size=chunk_size)]

    objs, count = await prefetch_parity(
        lambda: Author.objects.order_by("name").prefetch_related("book_set"),
        native_iter,
        lambda qs: list(qs.iterator(chunk_size=chunk_size)),
    )
    assert len(objs) == 4
    chunks = -(-4 // chunk_size)
    assert count == 1 + chunks  # the main query, then one prefetch per chunk
    assert all("book_set" in a._prefetched_objects_cache for a in objs)


async def test_aiterator_with_prefetch_inside_async_atomic() -> None:
    async with async_atomic():
        await Book.objects.acreate(
            title="uncommitted", author=await Author.objects.aget(name="Cid")
        )
        authors = [
            a
            async for a in Author.objects.order_by("name")
            .prefetch_related("book_set")
            .aiterator(chunk_size=2)
        ]
        cid = authors[2]
        assert sorted(b.title for b in cid.book_set.all()) == ["C1", "uncommitted"]
        async_connections["default"].set_rollback(True)
    assert not await Book.objects.filter(title="uncommitted").aexists()


@pytest.mark.parametrize(
    "lookups",
    [
        ("book_set",),
        ("book_set__editor", "country"),
        (Prefetch("book_set", queryset=Book.objects.order_by("-title"), to_attr="bs"),),
    ],
)
async def test_aprefetch_related_objects_parity(lookups: tuple[Any, ...]) -> None:
    async def native_prefetch(qs: Any) -> list[Any]:
        instances = [obj async for obj in native(qs)]
        await aprefetch_related_objects(instances, *lookups)
        return instances

    def sync_prefetch(qs: Any) -> list[Any]:
        instances = list(qs)
        prefetch_related_objects(instances, *lookups)
        return instances

    _, count = await prefetch_parity(
        lambda: Author.objects.order_by("name"), native_prefetch, sync_prefetch
    )
    assert count == 1 + len(lookups) + (1 if lookups[0] == "book_set__editor" else 0)


async def test_aprefetch_related_objects_of_nothing_runs_no_query() -> None:
    conn = async_connections["default"]
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        await aprefetch_related_objects([], "book_set")
    finally:
        conn.force_debug_cursor = False
    assert len(conn.queries_log) == start


@isolated()
async def test_prefetch_sees_the_blocks_rows_on_its_connection() -> None:
    conn = async_connections["default"]
    dee = await Author.objects.aget(name="Dee")
    await Book.objects.acreate(title="D2", author=dee)
    pid = await _backend_pid()
    conn.force_debug_cursor = True
    start = len(conn.queries_log)
    try:
        [dee] = [
            a
            async for a in Author.objects.filter(name="Dee").prefetch_related(
                "book_set"
            )
        ]
    finally:
        conn.force_debug_cursor = False
    assert sorted(b.title for b in dee.book_set.all()) == ["D1", "D2"]
    assert len(conn.queries_log) - start == 2  # both on this wrapper
    assert await _backend_pid() == pid


async def _backend_pid() -> int:
    async with async_connections["default"].cursor() as cursor:
        await cursor.execute("SELECT pg_backend_pid()")
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_prefetch_through_a_custom_prefetcher_is_refused() -> None:
    """A prefetcher async-db does not know could run sync queries: refused."""

    class Prefetcher:
        def get_prefetch_querysets(self, instances: Any, querysets: Any) -> Any:
            raise AssertionError("never called")

    from async_db.models.fields.related_descriptors import aget_prefetch_querysets

    with pytest.raises(NotSupportedError, match=r"Prefetcher.*is not native"):
        await aget_prefetch_querysets(Prefetcher(), [object()])


async def test_generic_prefetch_with_a_cold_cache() -> None:
    """With Django's content type cache empty, the prefetches through a
    GenericForeignKey (two content types) and a GenericRelation read the
    content types natively (no sync connection: a sync lookup would raise
    SynchronousOnlyOperation) and fill Django's cache, and give the caches
    the sync ORM gives."""
    from django.contrib.contenttypes.models import ContentType

    def cold_notes() -> Any:
        ContentType.objects.clear_cache()
        return RelNote.objects.order_by("text").prefetch_related("content_object")

    def cold_shelves() -> Any:
        ContentType.objects.clear_cache()
        return RelShelf.objects.prefetch_related("notes")

    conn = async_connections["default"]
    for make in (cold_notes, cold_shelves):
        conn.force_debug_cursor = True
        start = len(conn.queries_log)
        try:
            with SyncConnectionCounter() as counter:
                objs = [obj async for obj in make()]
        finally:
            conn.force_debug_cursor = False
        assert counter.opened == []
        statements = [q["sql"] for q in list(conn.queries_log)[start:]]
        assert any("django_content_type" in s for s in statements), statements
        assert ("ormapp", "relshelf") in ContentType.objects._cache["default"]
        sync_objs = await run_sync(lambda make=make: list(make()))
        assert pnormal(objs) == pnormal(sync_objs)
    notes = [n async for n in cold_notes()]
    assert [type(n.content_object) for n in notes] == [RelShelf, RelShelf, RelVolume]
