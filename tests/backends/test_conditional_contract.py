"""Conditional writes in the `MetadataIndex` contract, on every backend: the condition and the
change are one atomic step, and a refused change changes nothing, counters included."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from backends.test_index_contract import T0, add_store
from kvbox.backends.base import MetadataIndex
from kvbox.core.errors import PreconditionFailedError
from kvbox.core.models import Condition, RecordMeta, Store

pytestmark = pytest.mark.anyio


def rec(key: str, etag: str, body: bytes = b"x") -> RecordMeta:
    return RecordMeta(key=key, content_type="text/plain", encoding="identity", size=len(body), etag=etag,
                      modified_at=T0, inline=body)  # fmt: skip


async def counts(index: MetadataIndex, store_id: str) -> tuple[int, int, int, int]:
    s = await index.get_store(store_id)
    assert s is not None
    return s.record_count, s.stats.write_count, s.stats.delete_count, s.stats.storage_bytes


async def test_create_only_writes_once(index: MetadataIndex) -> None:
    store = await add_store(index)
    absent = Condition(must_not_exist=True)
    assert await index.put_record(store.id, rec("k", "e1"), condition=absent) is None
    before = await counts(index, store.id)
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("k", "e2", b"other"), condition=absent)
    assert await index.get_record(store.id, "k") == rec("k", "e1")
    assert await counts(index, store.id) == before == (1, 1, 0, 1)


async def test_if_match_replaces_only_the_named_version(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("k", "e1"))
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("k", "e2"), condition=Condition(if_match=("stale",)))
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("new", "e2"), condition=Condition(if_match=("e1",)))
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("new", "e2"), condition=Condition(must_exist=True))
    assert await index.get_record(store.id, "new") is None
    assert await counts(index, store.id) == (1, 1, 0, 1)

    replaced = await index.put_record(store.id, rec("k", "e2", b"yy"), condition=Condition(if_match=("x", "e1")))
    assert replaced == rec("k", "e1")
    assert await index.put_record(store.id, rec("k", "e3"), condition=Condition(must_exist=True)) is not None
    assert await index.put_record(store.id, rec("k", "e4"), condition=Condition(if_none_match=("e1",))) is not None
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("k", "e5"), condition=Condition(if_none_match=("e4",)))
    assert await counts(index, store.id) == (1, 4, 0, 1)


async def test_conditional_delete(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("k", "e1", b"abc"))
    for condition in (Condition(if_match=("e0",)), Condition(must_not_exist=True), Condition(if_none_match=("e1",))):
        with pytest.raises(PreconditionFailedError):
            await index.delete_record(store.id, "k", now_ms=T0 + 5, condition=condition)
    with pytest.raises(PreconditionFailedError):
        await index.delete_record(store.id, "missing", now_ms=T0 + 5, condition=Condition(must_exist=True))
    assert await counts(index, store.id) == (1, 1, 0, 3)  # refusals count no delete
    s = await index.get_store(store.id)
    assert s is not None and s.accessed_at == T0

    deleted = await index.delete_record(store.id, "k", now_ms=T0 + 9, condition=Condition(if_match=("e1",)))
    assert deleted == rec("k", "e1", b"abc")
    assert await counts(index, store.id) == (0, 1, 1, 0)
    gone = await index.delete_record(store.id, "k", now_ms=T0 + 9, condition=Condition(must_not_exist=True))
    assert gone is None
    assert await counts(index, store.id) == (0, 1, 2, 0)


async def test_racing_writers_with_one_etag_exactly_one_wins(index: MetadataIndex) -> None:
    """Every writer read version e0 and replaces it with If-Match: e0. The group-commit writer
    (SQLite) puts them in one transaction; PostgreSQL runs them on several connections."""
    store = await add_store(index)
    await index.put_record(store.id, rec("k", "e0"))
    racers = [index.put_record(store.id, rec("k", f"w{i}"), condition=Condition(if_match=("e0",))) for i in range(20)]
    other = index.put_record(store.id, rec("unrelated", "u"))  # in the same batch: it must not suffer
    results = await asyncio.gather(*racers, other, return_exceptions=True)
    won = [i for i, r in enumerate(results[:-1]) if not isinstance(r, BaseException)]
    assert len(won) == 1, results
    assert all(isinstance(r, PreconditionFailedError) for i, r in enumerate(results[:-1]) if i != won[0])
    assert results[-1] is None
    current = await index.get_record(store.id, "k")
    assert current is not None and current.etag == f"w{won[0]}"
    assert await counts(index, store.id) == (2, 3, 0, 2)


async def test_compare_and_set_increments_are_never_lost(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("n", "v0", b"0"))
    writers, increments = 4, 10

    async def writer(w: int) -> None:
        done = 0
        for attempt in range(1000):
            current = await index.get_record(store.id, "n")
            assert current is not None and current.inline is not None
            value = int(current.inline) + 1
            new = rec("n", f"w{w}-{attempt}", str(value).encode())
            try:
                await index.put_record(store.id, new, condition=Condition(if_match=(current.etag,)))
            except PreconditionFailedError:
                continue
            done += 1
            if done == increments:
                return
        raise AssertionError("too many conflicts")

    await asyncio.gather(*(writer(w) for w in range(writers)))
    final = await index.get_record(store.id, "n")
    assert final is not None and final.inline == str(writers * increments).encode()


async def test_a_refusal_keeps_the_store_as_it_was(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("k", "e1"))
    before = await index.get_store(store.id)
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, dataclasses.replace(rec("k", "e2"), modified_at=T0 + 50),
                               condition=Condition(must_not_exist=True))  # fmt: skip
    after: Store | None = await index.get_store(store.id)
    assert after == before
