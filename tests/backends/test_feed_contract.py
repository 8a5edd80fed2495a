"""The change feed and webhook part of the `MetadataIndex` contract, on every backend:
sequences and events of every kind of record change, the log's bounds and trimming, and the
webhook rows the dispatcher works with."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from backends.test_index_contract import T0, add_store, rec
from kvbox.backends.base import MetadataIndex
from kvbox.backends.memory import MemoryMetadataIndex
from kvbox.backends.postgres.metadata import PostgresMetadataIndex
from kvbox.backends.sqlite.metadata import SqliteMetadataIndex
from kvbox.core.errors import PreconditionFailedError
from kvbox.core.feed import Change, EventType
from kvbox.core.models import Condition, ExpiryRule, RecordExpiry, Visibility
from kvbox.core.webhooks import Attempt, Delivery, DeliveryStatus, Webhook

pytestmark = pytest.mark.anyio

S = 1000
C, U, D, E = EventType.CREATED, EventType.UPDATED, EventType.DELETED, EventType.EXPIRED


async def events(index: MetadataIndex, store_id: str, after: int = 0) -> list[tuple[int, str, str]]:
    page = await index.list_changes(store_id, after=after, limit=1000)
    assert page is not None
    return [(c.sequence, c.event_type, c.key) for c in page.items]


async def test_writes_and_deletes_are_numbered_in_order(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("a"))
    await index.put_record(store.id, rec("a", b"yy", at=T0 + 1))
    await index.put_record(store.id, rec("b"))
    await index.delete_record(store.id, "a", now_ms=T0 + 2)
    await index.delete_record(store.id, "missing", now_ms=T0 + 2)
    assert await events(index, store.id) == [(1, C, "a"), (2, U, "a"), (3, C, "b"), (4, D, "a")]
    page = await index.list_changes(store.id, after=1, limit=2)
    assert page is not None and (page.oldest, page.latest) == (1, 4)
    assert page.items[0] == Change(2, U, "a", '"a-2"', 2, "application/octet-stream", T0 + 1)
    assert [c.sequence for c in page.items] == [2, 3]
    deleted = (await index.list_changes(store.id, after=3, limit=5)) or None
    assert deleted is not None and deleted.items[0] == Change(4, D, "a", None, None, None, T0 + 2)


async def test_a_refused_write_logs_nothing(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("a"))
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("a"), condition=Condition(must_not_exist=True))
    with pytest.raises(PreconditionFailedError):
        await index.delete_record(store.id, "a", now_ms=T0, condition=Condition(if_match=("nope",)))
    assert await events(index, store.id) == [(1, C, "a")]


async def test_stores_have_their_own_sequences(index: MetadataIndex) -> None:
    one, two = await add_store(index), await add_store(index)
    await index.put_record(one.id, rec("a"))
    await index.put_record(two.id, rec("a"))
    assert await events(index, one.id) == [(1, C, "a")]
    assert await events(index, two.id) == [(1, C, "a")]
    assert await index.list_changes("missing", after=0, limit=10) is None


async def test_concurrent_writes_get_distinct_consecutive_sequences(index: MetadataIndex) -> None:
    store = await add_store(index)
    await asyncio.gather(*(index.put_record(store.id, rec(f"k{i}")) for i in range(50)))
    assert [s for s, _, _ in await events(index, store.id)] == list(range(1, 51))


async def test_expiry_and_deletes_by_prefix_close_what_they_remove(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, dataclasses.replace(rec("own"), expires_at=T0 + S))
    await index.put_record(store.id, rec("p/1"))
    await index.put_record(store.id, rec("p/2"))
    await index.put_record(store.id, dataclasses.replace(rec("late"), expires_at=T0 + S + 1))
    assert await index.reclaim_expired(now_ms=T0 + 2 * S, max_rows=1) == (1, [])
    assert await index.delete_prefix(store.id, "p/", visible=Visibility(T0 + 2 * S)) == 2
    # A write over a row the prefix hid first closes that record; one over an expired row too.
    await index.put_record(store.id, rec("p/1", at=T0 + 3 * S))
    await index.put_record(store.id, rec("late", at=T0 + 3 * S))
    await index.purge_deleted(max_rows=10)
    got = await events(index, store.id, after=4)
    assert got == [(5, E, "own"), (6, D, "p/1"), (7, C, "p/1"), (8, E, "late"), (9, C, "late"), (10, D, "p/2")]


async def test_store_rules_expire_through_the_walk_and_the_condition(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("r/a"))
    await index.put_record(store.id, rec("r/b"))
    expiry = RecordExpiry(rules=(ExpiryRule("r/", 1),))
    await index.update_record_expiry(store.id, lambda _: expiry)
    # A writer passes the rule's verdict through the condition (no constraint of its own).
    seen = Condition().seen_at(T0 + 2 * S, T0 + S)
    await index.put_record(store.id, rec("r/a", at=T0 + 2 * S), condition=seen)
    count, _, _ = await index.reclaim_store_expired(store.id, Visibility(T0 + 2 * S, expiry), after=None, max_keys=10)
    assert count == 1
    assert await events(index, store.id, after=2) == [(3, E, "r/a"), (4, C, "r/a"), (5, E, "r/b")]


async def test_trimming_moves_the_oldest_kept(index: MetadataIndex) -> None:
    store = await add_store(index)
    for i in range(5):
        await index.put_record(store.id, rec(f"k{i}", at=T0 + i * S))
    assert await index.trim_changes(before_ms=T0 + 2 * S, max_rows=1) == 1
    assert await index.trim_changes(before_ms=T0 + 2 * S, max_rows=10) == 1
    page = await index.list_changes(store.id, after=0, limit=10)
    assert page is not None and (page.oldest, page.latest) == (3, 5) and page.missed(1) and not page.missed(2)
    assert await index.trim_changes(before_ms=T0 + 10 * S, max_rows=10) == 3
    page = await index.list_changes(store.id, after=5, limit=10)
    assert page is not None and (page.items, page.oldest, page.latest) == ([], 6, 5) and not page.missed(5)


def hook(store_id: str, **kwargs: object) -> Webhook:
    fields: dict[str, object] = {"id": "wh1", "store_id": store_id, "request_url": "https://example.com/h",
                                 "event_types": (C, D), "key_prefix": "", "is_enabled": True, "secret": "s" * 32,
                                 "created_at": T0, "modified_at": T0}  # fmt: skip
    fields.update(kwargs)
    return Webhook(**fields)  # type: ignore[arg-type]


async def test_webhooks_round_trip_and_start_at_the_latest_sequence(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.put_record(store.id, rec("a"))
    created = await index.insert_webhook(hook(store.id))
    assert created == hook(store.id, cursor=1)
    assert await index.insert_webhook(hook("missing", id="wh2")) is None
    assert await index.get_webhook(store.id, "wh1") == created
    assert await index.get_webhook("other", "wh1") is None
    assert await index.list_webhooks(store.id) == [created]
    off = await index.update_webhook(store.id, "wh1", lambda w: dataclasses.replace(w, is_enabled=False))
    assert off is not None and not off.is_enabled
    await index.put_record(store.id, rec("b"))
    on = await index.update_webhook(
        store.id, "wh1", lambda w: dataclasses.replace(w, is_enabled=True, modified_at=T0 + 1)
    )
    assert on == hook(store.id, cursor=2, modified_at=T0 + 1)
    assert await index.delete_webhook(store.id, "wh1")
    assert not await index.delete_webhook(store.id, "wh1")
    assert await index.list_webhooks(store.id) == []


async def test_deliveries_leases_and_the_delivery_log(index: MetadataIndex) -> None:
    store = await add_store(index)
    await index.insert_webhook(hook(store.id))
    assert await index.webhooks_due(now_ms=T0, limit=10) == []
    await index.put_record(store.id, rec("a"))
    assert [w.id for w in await index.webhooks_due(now_ms=T0, limit=10)] == ["wh1"]
    assert await index.claim_webhook("wh1", owner="n1", now_ms=T0, until_ms=T0 + 60 * S)
    assert not await index.claim_webhook("wh1", owner="n2", now_ms=T0, until_ms=T0 + 60 * S)
    assert await index.webhooks_due(now_ms=T0, limit=10) == []
    delivery = Delivery("d1", "wh1", 1, C, b'{"x":1}', T0, T0)
    await index.enqueue_deliveries("wh1", [delivery], cursor=1)
    await index.release_webhook("wh1", owner="n1")
    assert await index.claim_webhook("wh1", owner="n2", now_ms=T0, until_ms=T0 + 60 * S)
    assert await index.next_delivery("wh1") == delivery
    failed = Attempt("d1", "wh1", 1, C, 1, DeliveryStatus.FAILED, 500, 12, "HTTP 500", T0)
    await index.record_attempt(failed, next_attempt_at=T0 + 5 * S)
    assert await index.next_delivery("wh1") == dataclasses.replace(delivery, attempts=1, next_attempt_at=T0 + 5 * S)
    log = await index.list_attempts("wh1", limit=100)
    assert [(a.status, a.attempt) for a in log] == [(DeliveryStatus.PENDING, 2), (DeliveryStatus.FAILED, 1)]
    ok = dataclasses.replace(failed, attempt=2, status=DeliveryStatus.SUCCEEDED, response_status=204, error=None)
    await index.record_attempt(ok, next_attempt_at=None)
    assert await index.next_delivery("wh1") is None
    assert [a.status for a in await index.list_attempts("wh1", limit=100)] == ["SUCCEEDED", "FAILED"]
    for n in range(3, 106):  # the log keeps the last 100 attempts
        d = Delivery(f"d{n}", "wh1", n, C, b"{}", T0, T0)
        await index.enqueue_deliveries("wh1", [d], cursor=n)
        await index.record_attempt(dataclasses.replace(ok, delivery_id=d.id, sequence=n), next_attempt_at=None)
    kept = await index.list_attempts("wh1", limit=100)
    assert len(kept) == 100 and kept[0].sequence == 105
    assert await index.delete_store(store.id)
    assert await index.list_webhooks(store.id) == []
    assert await index.webhooks_due(now_ms=T0, limit=10) == []


def second_opening(index: MetadataIndex) -> MetadataIndex | None:
    """Another process's view of the same data (None for the in-memory index: one process)."""
    if isinstance(index, SqliteMetadataIndex):
        return SqliteMetadataIndex(index.path)
    if isinstance(index, PostgresMetadataIndex):
        return PostgresMetadataIndex(index.url, pool_size=2)
    return None


async def test_watchers_hear_of_changes_other_openings_commit(index: MetadataIndex) -> None:
    store = await add_store(index)
    other = second_opening(index)
    if other is None:
        assert isinstance(index, MemoryMetadataIndex)
        return
    heard: list[str | None] = []
    woke = asyncio.Event()

    def on_change(store_id: str | None) -> None:
        heard.append(store_id)
        woke.set()

    watcher = asyncio.create_task(index.watch_changes(on_change))
    try:
        await asyncio.sleep(0.3)  # listening
        woke.clear()
        heard.clear()
        await other.put_record(store.id, rec("a"))
        await asyncio.wait_for(woke.wait(), timeout=1.0)
        assert heard[-1] in (store.id, None)
        woke.clear()
        await other.delete_record(store.id, "a", now_ms=T0)
        await asyncio.wait_for(woke.wait(), timeout=1.0)
    finally:
        watcher.cancel()
        await other.close()
