"""The `MetadataIndex` contract, run against every backend through the `index` fixture (conftest.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvbox.backends.base import MetadataIndex
from kvbox.core.errors import NameNotUniqueError, StorageError
from kvbox.core.ids import new_blob_name, new_id, new_secret
from kvbox.core.models import (
    GeneralAccess,
    Grant,
    KeyItem,
    Permission,
    RecordMeta,
    StatsDelta,
    Store,
    StorePage,
    StoreStats,
    Token,
    User,
)

pytestmark = pytest.mark.anyio

T0 = 1_767_225_600_000


def make_store(
    *, name: str | None = None, user_id: str = "user1", created_at: int = T0, store_id: str | None = None
) -> Store:
    return Store(
        id=store_id or new_id(),
        name=name,
        user_id=user_id,
        created_at=created_at,
        modified_at=created_at,
        accessed_at=created_at,
        url_signing_secret=new_secret(),
    )


async def add_store(index: MetadataIndex, **kwargs: Any) -> Store:
    store = make_store(**kwargs)
    await index.insert_store(store)
    return store


def rec(
    key: str, body: bytes = b"x", *, blob_id: str | None = None, size: int | None = None, at: int = T0
) -> RecordMeta:
    return RecordMeta(
        key=key,
        content_type="application/octet-stream",
        encoding="identity",
        size=len(body) if size is None else size,
        etag=f'"{key}-{len(body)}"',
        modified_at=at,
        inline=None if blob_id else body,
        blob_id=blob_id,
    )


def item_of(record: RecordMeta) -> KeyItem:
    """The listing item of a record as written."""
    r = record
    return KeyItem(r.key, r.size, r.content_type, r.modified_at, r.etag, r.expires_at)


async def keys_of(index: MetadataIndex, store_id: str, **kwargs: Any) -> list[str]:
    args: dict[str, Any] = {"after": None, "prefix": None, "limit": 1000, **kwargs}
    page = await index.list_keys(store_id, **args)
    return [item.key for item in page.items]


# schema, coordination and change detection


async def test_migrate_reports_a_current_schema_and_is_idempotent(index: MetadataIndex) -> None:
    found, now = await index.migrate()  # the fixture's index is set up already
    assert found == now
    assert await index.migrate() == (now, now)


async def test_exclusive_admits_the_only_holder_and_releases(index: MetadataIndex) -> None:
    async with index.exclusive("job") as held:
        assert held is True
    async with index.exclusive("job") as again:
        assert again is True


async def test_generations_move_with_what_they_cover(index: MetadataIndex) -> None:
    store = await add_store(index)
    before = index.read_generation()
    await index.put_record(store.id, rec("k"))
    assert index.read_generation() != before
    before = index.metadata_generation()
    await index.update_store(store.id, modified_at=T0 + 1, title="renamed")
    assert index.metadata_generation() != before
    before = index.metadata_generation()
    await index.insert_user(User(id="u9", username="gen", created_at=T0))
    assert index.metadata_generation() != before


# users and tokens


async def test_users_round_trip_and_order(index: MetadataIndex) -> None:
    bob = User(id="u2", username="bob", created_at=T0 + 1)
    ann = User(id="u1", username="ann", created_at=T0 + 1, default_general_access=GeneralAccess.ANYONE_WITH_ID_CAN_READ)
    eve = User(id="u3", username="eve", created_at=T0)
    for u in (bob, ann, eve):
        await index.insert_user(u)
    assert await index.get_user("u1") == ann
    assert await index.get_user_by_name("bob") == bob
    assert await index.get_user("nope") is None
    assert await index.get_user_by_name("nobody") is None
    assert await index.list_users() == [eve, ann, bob]  # by (created_at, id)


async def test_username_is_unique(index: MetadataIndex) -> None:
    await index.insert_user(User(id="u1", username="ann", created_at=T0))
    with pytest.raises(NameNotUniqueError):
        await index.insert_user(User(id="u2", username="ann", created_at=T0))
    assert [u.id for u in await index.list_users()] == ["u1"]


async def test_set_user_default_access(index: MetadataIndex) -> None:
    await index.insert_user(User(id="u1", username="ann", created_at=T0))
    await index.set_user_default_access("u1", GeneralAccess.ANYONE_WITH_NAME_CAN_READ)
    await index.set_user_default_access("missing", GeneralAccess.ANYONE_WITH_NAME_CAN_READ)  # no-op
    user = await index.get_user("u1")
    assert user is not None
    assert user.default_general_access is GeneralAccess.ANYONE_WITH_NAME_CAN_READ


async def test_tokens(index: MetadataIndex) -> None:
    t1 = Token(id="t1", user_id="u1", token_hash="h1", name="ci", created_at=T0)
    t2 = Token(id="t2", user_id="u1", token_hash="h2", name="laptop", created_at=T0 + 5)
    t3 = Token(id="t3", user_id="u2", token_hash="h3", name="other", created_at=T0)
    for t in (t1, t2, t3):
        await index.insert_token(t)
    assert await index.get_token_by_hash("h2") == t2
    assert await index.get_token_by_hash("missing") is None
    assert await index.list_tokens("u1") == [t1, t2]
    assert await index.list_tokens("nobody") == []
    assert await index.delete_token("t1") is True
    assert await index.delete_token("t1") is False
    assert await index.get_token_by_hash("h1") is None
    assert await index.list_tokens("u1") == [t2]


async def test_reinserting_a_token_id_replaces_it(index: MetadataIndex) -> None:
    await index.insert_token(Token(id="t1", user_id="u1", token_hash="h1", name="a", created_at=T0))
    renamed = Token(id="t1", user_id="u1", token_hash="h1", name="b", created_at=T0)
    await index.insert_token(renamed)
    assert await index.list_tokens("u1") == [renamed]


# stores


async def test_store_round_trip_keeps_every_field(index: MetadataIndex) -> None:
    store = dataclasses.replace(
        make_store(name="my-store"),
        modified_at=T0 + 10,
        accessed_at=T0 + 20,
        general_access=GeneralAccess.ANYONE_WITH_ID_CAN_READ,
        schema={"title": "s", "actorSpecification": 1, "nested": {"list": [1, "two", None]}},
        stats=StoreStats(read_count=1, write_count=2, delete_count=3, list_count=4, storage_bytes=5),
        record_count=6,
    )
    await index.insert_store(store)
    assert await index.get_store(store.id) == store
    assert await index.get_store_by_name("user1", "my-store") == store
    assert await index.get_store("missing") is None
    assert await index.get_store_by_name("user2", "my-store") is None
    assert await index.get_store_by_name("user1", "other") is None


async def test_store_names_are_unique_per_owner(index: MetadataIndex) -> None:
    await add_store(index, name="dup")
    with pytest.raises(NameNotUniqueError):
        await add_store(index, name="dup")
    await add_store(index, name="dup", user_id="user2")
    await add_store(index)  # any number of unnamed stores
    await add_store(index)
    page = await index.list_stores("user1", include_unnamed=True, offset=0, limit=10, desc=False)
    assert page.total == 3


async def test_update_store(index: MetadataIndex) -> None:
    a = await add_store(index, name="a")
    b = await add_store(index, name="b")

    renamed = await index.update_store(a.id, modified_at=T0 + 100, name="a2")
    assert renamed is not None
    assert (renamed.name, renamed.modified_at, renamed.accessed_at) == ("a2", T0 + 100, T0 + 100)
    assert await index.get_store(a.id) == renamed
    assert await index.get_store_by_name("user1", "a") is None

    with pytest.raises(NameNotUniqueError):
        await index.update_store(a.id, modified_at=T0 + 200, name="b")
    assert await index.get_store(a.id) == renamed  # nothing changed

    same = await index.update_store(b.id, modified_at=T0 + 50, name="b")  # its own name is fine
    assert same is not None and same.name == "b"

    access = await index.update_store(a.id, modified_at=T0 + 10, general_access=GeneralAccess.RESTRICTED)
    assert access is not None
    assert access.name == "a2"  # UNSET leaves the name alone
    assert access.general_access is GeneralAccess.RESTRICTED
    assert access.modified_at == T0 + 100  # times never move backwards

    unnamed = await index.update_store(b.id, modified_at=T0 + 300, name=None)
    assert unnamed is not None and unnamed.name is None
    assert await index.get_store_by_name("user1", "b") is None
    await add_store(index, name="b")  # the name is free again

    assert await index.update_store("missing", modified_at=T0, name="x") is None


async def test_delete_store_frees_name_and_hides_records(index: MetadataIndex) -> None:
    store = await add_store(index, name="gone")
    await index.put_record(store.id, rec("k1"))
    assert await index.delete_store(store.id) is True
    assert await index.delete_store(store.id) is False
    assert await index.get_store(store.id) is None
    assert await index.get_record(store.id, "k1") is None
    page = await index.list_keys(store.id, after=None, prefix=None, limit=10)
    assert (page.items, page.is_truncated) == ([], False)
    assert await index.delete_record(store.id, "k1", now_ms=T0) is None
    with pytest.raises(StorageError):
        await index.put_record(store.id, rec("k2"))
    await add_store(index, name="gone")


async def test_list_stores_filters_orders_and_pages(index: MetadataIndex) -> None:
    # created_at ties are broken by creation order
    specs = [("id000000000000003", T0, "n3"), ("id000000000000001", T0, None), ("id000000000000002", T0 + 1, "n2"),
             ("id000000000000000", T0 + 2, None), ("id000000000000004", T0 - 1, "n4")]  # fmt: skip
    for store_id, created, name in specs:
        await add_store(index, store_id=store_id, created_at=created, name=name)
    await add_store(index, user_id="someone-else", name="n3")

    everything = await index.list_stores("user1", include_unnamed=True, offset=0, limit=100, desc=False)
    assert everything.total == 5
    asc = [s.id[-1] for s in everything.items]
    assert asc == ["4", "3", "1", "2", "0"]

    desc = await index.list_stores("user1", include_unnamed=True, offset=0, limit=100, desc=True)
    assert [s.id[-1] for s in desc.items] == asc[::-1]

    named = await index.list_stores("user1", include_unnamed=False, offset=0, limit=100, desc=False)
    assert (named.total, [s.id[-1] for s in named.items]) == (3, ["4", "3", "2"])

    page = await index.list_stores("user1", include_unnamed=True, offset=1, limit=2, desc=False)
    assert (page.total, [s.id[-1] for s in page.items]) == (5, ["3", "1"])
    page = await index.list_stores("user1", include_unnamed=True, offset=4, limit=2, desc=True)
    assert (page.total, [s.id[-1] for s in page.items]) == (5, ["4"])
    past = await index.list_stores("user1", include_unnamed=True, offset=10, limit=2, desc=False)
    assert (past.total, past.items) == (5, [])
    none = await index.list_stores("nobody", include_unnamed=True, offset=0, limit=10, desc=False)
    assert (none.total, none.items) == (0, [])


async def test_apply_stats(index: MetadataIndex) -> None:
    a = await add_store(index)
    b = await add_store(index)
    await index.apply_stats({})
    await index.apply_stats(
        {
            a.id: StatsDelta(reads=3, lists=1, accessed_at=T0 + 50),
            b.id: StatsDelta(reads=0, lists=2, accessed_at=T0 - 50),
            "missing": StatsDelta(reads=1),
        }
    )
    await index.apply_stats({a.id: StatsDelta(reads=1, lists=0, accessed_at=T0 + 10)})
    sa, sb = await index.get_store(a.id), await index.get_store(b.id)
    assert sa is not None and sb is not None
    assert (sa.stats.read_count, sa.stats.list_count, sa.accessed_at, sa.modified_at) == (4, 1, T0 + 50, T0)
    assert (sb.stats.read_count, sb.stats.list_count, sb.accessed_at) == (0, 2, T0)


# records


async def test_put_get_replace_record(index: MetadataIndex) -> None:
    store = await add_store(index)
    body = bytes(range(256))
    first = rec("k", body, at=T0 + 10)
    assert await index.put_record(store.id, first) is None
    assert await index.get_record(store.id, "k") == first
    s = await index.get_store(store.id)
    assert s is not None
    assert (s.record_count, s.stats.write_count, s.stats.storage_bytes) == (1, 1, 256)
    assert (s.modified_at, s.accessed_at) == (T0 + 10, T0 + 10)

    blob = new_blob_name()
    second = rec("k", size=1000, blob_id=blob, at=T0 + 5)
    assert await index.put_record(store.id, second) == first
    assert await index.get_record(store.id, "k") == second
    s = await index.get_store(store.id)
    assert s is not None
    assert (s.record_count, s.stats.write_count, s.stats.storage_bytes) == (1, 2, 1000)
    assert s.modified_at == T0 + 10  # never backwards

    await index.put_record(store.id, rec("other", b"abc"))
    s = await index.get_store(store.id)
    assert s is not None
    assert (s.record_count, s.stats.write_count, s.stats.storage_bytes) == (2, 3, 1003)


async def test_empty_inline_body_is_not_none(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("empty", b""))
    got = await index.get_record(store.id, "empty")
    assert got is not None and got.inline == b"" and got.blob_id is None and got.size == 0


async def test_records_are_per_store(index: MetadataIndex) -> None:
    a, b = await add_store(index), await add_store(index)
    await index.put_record(a.id, rec("k", b"from a"))
    assert await index.get_record(b.id, "k") is None
    assert await index.get_record("missing", "k") is None
    assert await keys_of(index, b.id) == []


async def test_put_record_into_missing_store_raises(index: MetadataIndex) -> None:
    with pytest.raises(StorageError):
        await index.put_record("missing", rec("k"))


async def test_delete_record(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("k", b"12345", at=T0 + 1))

    assert await index.delete_record(store.id, "nope", now_ms=T0 + 100) is None
    s = await index.get_store(store.id)
    assert s is not None
    assert (s.stats.delete_count, s.record_count, s.stats.storage_bytes) == (1, 1, 5)
    assert (s.modified_at, s.accessed_at) == (T0 + 1, T0 + 100)

    deleted = await index.delete_record(store.id, "k", now_ms=T0 + 200)
    assert deleted == rec("k", b"12345", at=T0 + 1)
    assert await index.get_record(store.id, "k") is None
    s = await index.get_store(store.id)
    assert s is not None
    assert (s.stats.delete_count, s.record_count, s.stats.storage_bytes) == (2, 0, 0)
    assert (s.modified_at, s.accessed_at) == (T0 + 200, T0 + 200)

    assert await index.delete_record("missing", "k", now_ms=T0) is None


# key listing

BYTE_ORDER = ["!", "(", "-", "0", "A", "Z", "_", "a", "z"]


async def test_list_keys_in_byte_order(index: MetadataIndex) -> None:
    store = await add_store(index)
    for key in ["a", "_", "A", "(", "!", "-", "z", "0", "Z"]:
        await index.put_record(store.id, rec(key, b"x" * len(key)))
    page = await index.list_keys(store.id, after=None, prefix=None, limit=100)
    assert [i.key for i in page.items] == BYTE_ORDER
    assert page.is_truncated is False and page.next_key is None


async def test_list_keys_after_prefix_and_limit(index: MetadataIndex) -> None:
    store = await add_store(index)
    keys = ["a", "a-1", "a-2", "a-3", "a_", "ab", "b", "b-1"]
    for i, key in enumerate(keys):
        await index.put_record(store.id, rec(key, b"x" * i))

    assert await keys_of(index, store.id, after="a-2") == ["a-3", "a_", "ab", "b", "b-1"]
    assert await keys_of(index, store.id, after="a-") == ["a-1", "a-2", "a-3", "a_", "ab", "b", "b-1"]
    assert await keys_of(index, store.id, after="zzz") == []
    assert await keys_of(index, store.id, prefix="a-") == ["a-1", "a-2", "a-3"]
    assert await keys_of(index, store.id, prefix="b") == ["b", "b-1"]
    assert await keys_of(index, store.id, prefix="c") == []
    assert await keys_of(index, store.id, prefix="") == keys
    assert await keys_of(index, store.id, prefix="a-", after="a-1") == ["a-2", "a-3"]
    assert await keys_of(index, store.id, prefix="a-", after="0") == ["a-1", "a-2", "a-3"]  # after < prefix
    assert await keys_of(index, store.id, prefix="a-", after="a-3") == []
    assert await keys_of(index, store.id, prefix="a-", after="b") == []  # after beyond the prefix

    page = await index.list_keys(store.id, after=None, prefix="a", limit=2)
    assert page.items == [item_of(rec("a", b"")), item_of(rec("a-1", b"x"))]
    assert page.is_truncated is True and page.next_key == "a-1"


async def test_truncation_flag_is_exact(index: MetadataIndex) -> None:
    store = await add_store(index)
    for key in ["k1", "k2", "k3"]:
        await index.put_record(store.id, rec(key))
    exact = await index.list_keys(store.id, after=None, prefix=None, limit=3)
    assert (len(exact.items), exact.is_truncated) == (3, False)
    short = await index.list_keys(store.id, after=None, prefix=None, limit=2)
    assert (len(short.items), short.is_truncated, short.next_key) == (2, True, "k2")
    rest = await index.list_keys(store.id, after="k2", prefix=None, limit=1)
    assert ([i.key for i in rest.items], rest.is_truncated) == (["k3"], False)
    in_prefix = await index.list_keys(store.id, after="k1", prefix="k", limit=2)
    assert (len(in_prefix.items), in_prefix.is_truncated) == (2, False)
    zero = await index.list_keys(store.id, after=None, prefix=None, limit=0)
    assert (zero.items, zero.is_truncated) == ([], True)


async def test_list_keys_of_missing_store_is_empty(index: MetadataIndex) -> None:
    page = await index.list_keys("missing", after=None, prefix=None, limit=10)
    assert (page.items, page.is_truncated) == ([], False)


# housekeeping


async def test_purge_deleted_returns_blob_ids_in_bounded_batches(index: MetadataIndex) -> None:
    doomed, kept = await add_store(index), await add_store(index)
    blob_ids = {new_blob_name() for _ in range(7)}
    for i, blob_id in enumerate(sorted(blob_ids)):
        await index.put_record(doomed.id, rec(f"blob{i}", size=10, blob_id=blob_id))
    for i in range(4):
        await index.put_record(doomed.id, rec(f"inline{i}"))
    kept_blob = new_blob_name()
    await index.put_record(kept.id, rec("keep", size=10, blob_id=kept_blob))

    assert await index.purge_deleted(max_rows=100) == []  # nothing deleted yet
    await index.delete_store(doomed.id)
    assert await index.referenced_blob_ids([*blob_ids, kept_blob]) == {*blob_ids, kept_blob}

    freed: list[str] = []
    for _ in range(20):
        batch = await index.purge_deleted(max_rows=3)
        assert len(batch) <= 3
        freed += batch
        if not batch and len(freed) == len(blob_ids):
            break
    assert sorted(freed) == sorted(blob_ids)  # each exactly once
    assert await index.referenced_blob_ids([*blob_ids, kept_blob]) == {kept_blob}
    assert await index.get_record(kept.id, "keep") is not None
    assert await index.purge_deleted(max_rows=3) == []


async def test_purge_of_an_empty_deleted_store(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.delete_store(store.id)
    assert await index.purge_deleted(max_rows=10) == []
    assert await index.purge_deleted(max_rows=10) == []


async def test_referenced_blob_ids(index: MetadataIndex) -> None:
    store = await add_store(index)
    live = [new_blob_name() for _ in range(3)]
    for i, blob_id in enumerate(live):
        await index.put_record(store.id, rec(f"k{i}", size=1, blob_id=blob_id))
    unknown = [new_blob_name() for _ in range(1200)]  # more than one query's worth of parameters
    assert await index.referenced_blob_ids([]) == set()
    assert await index.referenced_blob_ids([*unknown, live[0], live[0], live[2]]) == {live[0], live[2]}
    await index.delete_record(store.id, "k0", now_ms=T0)
    assert await index.referenced_blob_ids(live) == {live[1], live[2]}
    await index.put_record(store.id, rec("k1", b"inline now"))  # a replaced blob is no longer referenced
    assert await index.referenced_blob_ids(live) == {live[2]}


# property: listing matches a sorted dict model

KEY_CHARS = "!(-0Aa_z\u00e9\u20ac\U0001f600"  # includes multi-byte UTF-8 to pin byte order
keys_st = st.text(alphabet=KEY_CHARS, min_size=1, max_size=4)
ops_st = st.lists(st.tuples(st.booleans(), keys_st, st.integers(0, 50)), max_size=40)
query_st = st.tuples(
    st.one_of(st.none(), st.text(alphabet=KEY_CHARS, max_size=2)),
    st.one_of(st.none(), st.text(alphabet=KEY_CHARS, max_size=3)),
    st.integers(1, 6),
)


def expected_keys(model: dict[str, int], prefix: str | None, after: str | None) -> list[str]:
    return [k for k in sorted(model) if k.startswith(prefix or "") and (after is None or k > after)]


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_st, queries=st.lists(query_st, min_size=1, max_size=5))
async def test_list_keys_matches_model(
    index: MetadataIndex, ops: list[tuple[bool, str, int]], queries: list[tuple[str | None, str | None, int]]
) -> None:
    store = await add_store(index)  # a fresh store per example: the fixture outlives examples
    model: dict[str, int] = {}
    for is_put, key, size in ops:
        if is_put:
            await index.put_record(store.id, rec(key, size=size))
            model[key] = size
        else:
            await index.delete_record(store.id, key, now_ms=T0)
            model.pop(key, None)

    for prefix, after, limit in queries:
        want = expected_keys(model, prefix, after)
        page = await index.list_keys(store.id, after=after, prefix=prefix, limit=limit)
        assert page.items == [item_of(rec(k, size=model[k])) for k in want[:limit]]
        assert page.is_truncated == (len(want) > limit)

        walked: list[str] = []
        cursor = None
        for _ in range(len(model) + 2):  # bounded, so a cursor that never advances fails instead of hanging
            page = await index.list_keys(store.id, after=cursor, prefix=prefix, limit=limit)
            walked += [i.key for i in page.items]
            if not page.is_truncated:
                break
            cursor = page.next_key
        assert walked == expected_keys(model, prefix, None)

    s = await index.get_store(store.id)
    assert s is not None
    assert (s.record_count, s.stats.storage_bytes) == (len(model), sum(model.values()))


async def test_list_stores_by_name_and_searched_by_name_prefix_or_id(index: MetadataIndex) -> None:
    specs = [("Beta", T0), ("alpha-2", T0 + 1), (None, T0 + 2), ("ALPHA-1", T0 + 3), ("gamma", T0 + 4)]
    ids = [(await add_store(index, name=name, created_at=created)).id for name, created in specs]
    await add_store(index, user_id="someone-else", name="alpha-0")
    await add_store(index, user_id="friend", name="alpha-shared")
    await index.set_grant(Grant(store_id=(await index.list_stores("friend", include_unnamed=False, offset=0, limit=1,
                                                                  desc=False)).items[0].id,
                                user_id="user1", permission=Permission.READ, created_at=T0))  # fmt: skip

    def names(page: StorePage) -> list[str | None]:
        return [s.name for s in page.items]

    by_name = await index.list_stores("user1", include_unnamed=True, offset=0, limit=10, desc=False, by_name=True)
    assert names(by_name) == ["ALPHA-1", "alpha-2", "Beta", "gamma", None]
    backwards = await index.list_stores("user1", include_unnamed=True, offset=0, limit=10, desc=True, by_name=True)
    assert names(backwards) == [None, "gamma", "Beta", "alpha-2", "ALPHA-1"]
    page = await index.list_stores("user1", include_unnamed=False, offset=1, limit=2, desc=False, by_name=True)
    assert (page.total, names(page)) == (4, ["alpha-2", "Beta"])
    found = await index.list_stores("user1", include_unnamed=True, offset=0, limit=10, desc=False, by_name=True,
                                    search="Alpha")  # fmt: skip
    assert (found.total, names(found)) == (2, ["ALPHA-1", "alpha-2"])
    both = await index.list_stores("user1", include_unnamed=True, offset=0, limit=10, desc=False, by_name=True,
                                   shared=True, search="alpha")  # fmt: skip
    assert names(both) == ["ALPHA-1", "alpha-2", "alpha-shared"]
    by_id = await index.list_stores("user1", include_unnamed=True, offset=0, limit=10, desc=False, search=ids[2])
    assert [s.id for s in by_id.items] == [ids[2]]
    assert (await index.list_stores("user1", include_unnamed=True, offset=0, limit=10, desc=False,
                                    search="lpha")).total == 0  # a prefix, not a substring  # fmt: skip
