"""The record lifecycle part of the `MetadataIndex` contract, on every backend: own expiry,
listing what is visible (the SQL predicate against core/expiry.py), deleting by prefix, and
the sweeper's reclaiming calls."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.test_index_contract import T0, add_store, item_of, keys_of, rec
from kvbox.backends.base import MetadataIndex
from kvbox.core.errors import InvalidValueError, PreconditionFailedError
from kvbox.core.expiry import is_gone, replace_rules, sorted_rules
from kvbox.core.ids import new_blob_name
from kvbox.core.models import (
    NO_EXPIRY,
    Condition,
    ExpiryRule,
    RecordExpiry,
    RecordMeta,
    RetiredRules,
    Store,
    Visibility,
)

pytestmark = pytest.mark.anyio

S = 1000


def expiring(key: str, at: int | None, *, modified: int = T0, blob: bool = False, size: int = 1) -> RecordMeta:
    return dataclasses.replace(
        rec(key, b"x" * size, blob_id=new_blob_name() if blob else None, at=modified), expires_at=at
    )


async def counters(index: MetadataIndex, store: Store) -> tuple[int, int]:
    s = await index.get_store(store.id)
    assert s is not None
    return s.record_count, s.stats.storage_bytes


async def test_own_expiry_round_trips(index: MetadataIndex) -> None:
    store = await add_store(index)
    first = expiring("k", T0 + 60 * S)
    assert await index.put_record(store.id, first) is None
    assert await index.get_record(store.id, "k") == first
    page = await index.list_keys(store.id, after=None, prefix=None, limit=10)
    assert page.items == [item_of(first)]
    # A write replaces the expiry too, and hands the replaced row back with its own.
    assert await index.put_record(store.id, rec("k")) == first
    got = await index.get_record(store.id, "k")
    assert got is not None and got.expires_at is None
    assert await index.delete_record(store.id, "k", now_ms=T0) == rec("k")


async def test_listing_without_visibility_shows_every_row(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, expiring("gone", T0))
    await index.put_record(store.id, expiring("live", T0 + S))
    assert await keys_of(index, store.id) == ["gone", "live"]
    assert await keys_of(index, store.id, visible=Visibility(T0)) == ["live"]
    assert await keys_of(index, store.id, visible=Visibility(T0 + S)) == []


rule_st = st.tuples(st.sampled_from(["", "a", "ab", "b", "ba"]), st.integers(1, 30))
rules_st = st.lists(rule_st, max_size=3, unique_by=lambda r: r[0]).map(
    lambda pairs: sorted_rules([ExpiryRule(p, n) for p, n in pairs])
)
expiry_st = st.builds(
    RecordExpiry,
    rules=rules_st,
    retired=st.lists(st.builds(RetiredRules, rules=rules_st, retired_at=st.integers(T0, T0 + 40 * S)), max_size=2).map(
        tuple
    ),
)
row_st = st.tuples(
    st.text(alphabet="ab", min_size=1, max_size=3),
    st.integers(0, 40),  # modified, seconds after T0
    st.one_of(st.none(), st.integers(0, 60)),  # own expiry, seconds after T0
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row_st, max_size=10, unique_by=lambda r: r[0]),
    expiry=expiry_st,
    now=st.integers(0, 70),
    prefix=st.sampled_from([None, "a", "b", "ab"]),
    limit=st.integers(1, 4),
)
async def test_listing_shows_exactly_what_is_not_gone(
    index: MetadataIndex,
    rows: list[tuple[str, int, int | None]],
    expiry: RecordExpiry,
    now: int,
    prefix: str | None,
    limit: int,
) -> None:
    """The SQL backends render `is_gone` as a predicate: it must agree with it row by row."""
    store = await add_store(index)
    for key, modified, own in rows:
        at = None if own is None else T0 + own * S
        await index.put_record(store.id, expiring(key, at, modified=T0 + modified * S))
    when = T0 + now * S
    visible = Visibility(when, expiry)
    want = sorted(
        key
        for key, modified, own in rows
        if key.startswith(prefix or "")
        and not is_gone(expiry, key, T0 + modified * S, None if own is None else T0 + own * S, when)
    )
    walked: list[str] = []
    cursor = None
    for _ in range(len(rows) + 2):
        page = await index.list_keys(store.id, after=cursor, prefix=prefix, limit=limit, visible=visible)
        walked += [i.key for i in page.items]
        assert len(page.items) <= limit
        if not page.is_truncated:
            break
        cursor = page.next_key
    assert walked == want


async def test_delete_prefix_hides_at_once_counts_what_was_visible_and_spares_later_writes(
    index: MetadataIndex,
) -> None:
    store = await add_store(index)
    for r in (rec("a-1"), expiring("a-2", T0 + 10 * S, blob=True, size=5), expiring("a-3", T0), rec("b-1")):
        await index.put_record(store.id, r)
    now = Visibility(T0 + 1)
    assert await index.delete_prefix(store.id, "a-", visible=now) == 2  # a-3 had expired: not counted
    assert await index.get_record(store.id, "a-1") is None
    assert await keys_of(index, store.id) == ["b-1"]
    assert await index.purge_pending()
    again = rec("a-1", b"new")
    assert await index.put_record(store.id, again) is not None  # the hidden row is replaced
    assert await index.get_record(store.id, "a-1") == again
    assert await keys_of(index, store.id, prefix="a-") == ["a-1"]
    assert await index.delete_prefix(store.id, "a-", visible=now) == 1  # only the new write
    await index.put_record(store.id, rec("a-4"))

    freed: list[str] = []
    for _ in range(10):
        freed += await index.purge_deleted(max_rows=2)
        if not await index.purge_pending():
            break
    assert not await index.purge_pending()
    assert len(freed) == 1  # a-2's blob
    assert await keys_of(index, store.id) == ["a-4", "b-1"]
    assert await counters(index, store) == (2, 2)
    s = await index.get_store(store.id)
    assert s is not None and s.stats.delete_count == 2 and s.stats.write_count == 6


async def test_delete_prefix_empty_means_every_record_and_a_missing_store_is_none(index: MetadataIndex) -> None:
    store = await add_store(index)
    other = await add_store(index)
    for key in ("x", "y", "z"):
        await index.put_record(store.id, rec(key))
        await index.put_record(other.id, rec(key))
    assert await index.delete_prefix(store.id, "", visible=Visibility(T0)) == 3
    assert await keys_of(index, store.id) == []
    assert await keys_of(index, other.id) == ["x", "y", "z"]
    assert await index.delete_prefix("no-such-store", "", visible=Visibility(T0)) is None
    assert await index.delete_prefix(store.id, "", visible=Visibility(T0)) == 0
    while await index.purge_pending():
        await index.purge_deleted(max_rows=100)
    assert await counters(index, store) == (0, 0)
    assert await counters(index, other) == (3, 3)


async def test_reclaim_expired_takes_due_rows_oldest_first_and_moves_the_counters(index: MetadataIndex) -> None:
    a = await add_store(index)
    b = await add_store(index)
    blob = expiring("a2", T0 + 2 * S, blob=True, size=10)
    for r in (expiring("a1", T0 + 1 * S), blob, expiring("a3", T0 + 9 * S), rec("a4")):
        await index.put_record(a.id, r)
    await index.put_record(b.id, expiring("b1", T0 + 3 * S, size=4))
    assert await index.reclaim_expired(now_ms=T0, max_rows=10) == (0, [])
    assert await index.reclaim_expired(now_ms=T0 + 5 * S, max_rows=2) == (2, [blob.blob_id])
    assert await keys_of(index, a.id) == ["a3", "a4"]
    assert await index.reclaim_expired(now_ms=T0 + 5 * S, max_rows=2) == (1, [])
    assert await keys_of(index, b.id) == []
    assert await counters(index, a) == (2, 2)
    assert await counters(index, b) == (0, 0)
    s = await index.get_store(a.id)
    assert s is not None and (s.stats.write_count, s.stats.delete_count) == (4, 0)


async def test_reclaim_store_expired_walks_a_store_window_by_window(index: MetadataIndex) -> None:
    store = await add_store(index)
    expiry = RecordExpiry(sorted_rules([ExpiryRule("t", 10)]))
    for key, modified in (("a", T0), ("t1", T0), ("t2", T0 + 20 * S), ("t3", T0), ("u", T0)):
        await index.put_record(store.id, rec(key, at=modified, blob_id=new_blob_name() if key == "t3" else None))
    visible = Visibility(T0 + 15 * S, expiry)
    walked = []
    after = None
    freed: list[str] = []
    for _ in range(10):
        count, blobs, after = await index.reclaim_store_expired(store.id, visible, after=after, max_keys=2)
        walked.append((count, after))
        freed += blobs
        if after is None:
            break
    assert walked == [(1, "t1"), (1, "t3"), (0, None)]
    assert len(freed) == 1
    assert await keys_of(index, store.id) == ["a", "t2", "u"]
    assert await counters(index, store) == (3, 3)
    assert await index.reclaim_store_expired("missing", visible, after=None, max_keys=2) == (0, [], None)


async def test_expiry_rules_are_changed_in_one_step(index: MetadataIndex) -> None:
    store = await add_store(index)
    assert await index.list_expiring_stores(after=None, limit=10) == []
    day = sorted_rules([ExpiryRule("", 86400)])
    before = index.metadata_generation()
    changed = await index.update_record_expiry(store.id, lambda e: replace_rules(e, day, T0 + 5), modified_at=T0 + 5)
    assert changed is not None and changed.record_expiry == RecordExpiry(day)
    assert changed.modified_at == T0 + 5
    assert index.metadata_generation() != before
    assert await index.get_store(store.id) == changed
    assert await index.list_expiring_stores(after=None, limit=10) == [store.id]
    assert await index.list_expiring_stores(after=store.id, limit=10) == []

    def refuse(e: RecordExpiry) -> RecordExpiry:
        raise InvalidValueError("no")

    with pytest.raises(InvalidValueError):
        await index.update_record_expiry(store.id, refuse, modified_at=T0 + 9)
    assert await index.get_store(store.id) == changed

    loosened = await index.update_record_expiry(store.id, lambda e: replace_rules(e, (), T0 + 7))
    assert loosened is not None and loosened.record_expiry == RecordExpiry((), (RetiredRules(day, T0 + 7),))
    assert loosened.modified_at == T0 + 5  # without modified_at the times stay
    assert await index.list_expiring_stores(after=None, limit=10) == [store.id]  # retired rules still count
    cleared = await index.update_record_expiry(store.id, lambda e: NO_EXPIRY)
    assert cleared is not None and cleared.record_expiry == NO_EXPIRY
    assert await index.list_expiring_stores(after=None, limit=10) == []
    assert await index.update_record_expiry("missing", lambda e: e) is None


async def test_freed_blobs_are_kept_until_forgotten(index: MetadataIndex) -> None:
    store = await add_store(index)
    doomed = await add_store(index)
    blobs = [expiring(f"e{i}", T0, blob=True) for i in range(3)]
    for r in blobs:
        await index.put_record(store.id, r)
    hidden = rec("p-1", blob_id=new_blob_name())
    await index.put_record(store.id, hidden)
    gone = rec("g", blob_id=new_blob_name())
    await index.put_record(doomed.id, gone)
    assert await index.freed_blobs(limit=10) == []
    _, freed = await index.reclaim_expired(now_ms=T0, max_rows=10)
    await index.delete_prefix(store.id, "p-", visible=Visibility(T0))
    await index.delete_store(doomed.id)
    while await index.purge_pending():
        freed += await index.purge_deleted(max_rows=10)
    want = sorted(b for b in [*(r.blob_id for r in blobs), hidden.blob_id, gone.blob_id] if b)
    assert sorted(freed) == want
    assert await index.freed_blobs(limit=10) == want  # a crash now would leave them listed
    assert await index.freed_blobs(limit=2) == want[:2]
    await index.forget_freed_blobs(want[:2])
    assert await index.freed_blobs(limit=10) == want[2:]
    await index.forget_freed_blobs(want)
    assert await index.freed_blobs(limit=10) == []


async def test_conditions_see_expired_and_deleted_records_as_missing(index: MetadataIndex) -> None:
    """A condition is judged against the record a reader sees: one past its own expiry, one
    the store's rules have expired (`stale_before`) and one a delete by prefix hid are all
    missing, so a create-only write succeeds and an If-Match on their ETag fails."""
    store = await add_store(index)
    now = T0 + 100 * S
    own, ruled, hidden = expiring("own", T0 + 10 * S), rec("ruled", at=T0), rec("hidden-1")
    for r in (own, ruled, hidden, rec("live")):
        await index.put_record(store.id, r)
    assert await index.delete_prefix(store.id, "hidden-", visible=Visibility(now)) == 1

    def seen(c: Condition, stale_before: int | None = None) -> Condition:
        return c.seen_at(now, stale_before)

    for r, stale in ((own, None), (ruled, T0), (hidden, None)):
        with pytest.raises(PreconditionFailedError):
            await index.put_record(store.id, rec(r.key, b"new"), condition=seen(Condition(if_match=(r.etag,)), stale))
        with pytest.raises(PreconditionFailedError):
            await index.delete_record(store.id, r.key, now_ms=now, condition=seen(Condition(must_exist=True), stale))
        fresh = dataclasses.replace(rec(r.key, b"new", at=now), etag=f"{r.key}-new")
        await index.put_record(store.id, fresh, condition=seen(Condition(must_not_exist=True), stale))
        assert await index.get_record(store.id, r.key) == fresh
    # The same rows judged without a time (or before their expiry) are there.
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("live", b"new"), condition=seen(Condition(must_not_exist=True)))
    assert Condition(must_exist=True).holds(own)
    assert not Condition(must_exist=True).seen_at(now, None).holds(own)
    assert Condition(must_exist=True).seen_at(T0 + 5 * S, None).holds(own)
    assert not Condition(must_exist=True).seen_at(now, T0).holds(ruled)
    assert Condition(must_exist=True).seen_at(now, T0 - 1).holds(ruled)
