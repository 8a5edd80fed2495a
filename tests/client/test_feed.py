"""The client's change feed and webhook calls against the real server (sync and async twins),
the SDK's `watch`, and the signature helper."""

from __future__ import annotations

import time

import anyio
import pytest

from kvbox.client import KvboxClientAsync, NotFoundError, StoreClient, verify_signature
from kvbox.core.webhooks import sign

from .conftest import unique_name


def test_list_changes_pages_and_waits(store: StoreClient) -> None:
    store.set_record("a", 1)
    store.set_record("a", 2)
    store.delete_record("a")
    page = store.list_changes()
    assert [(c.sequence, c.event_type, c.key) for c in page.items] == [
        (1, "RECORD.CREATED", "a"), (2, "RECORD.UPDATED", "a"), (3, "RECORD.DELETED", "a")]  # fmt: skip
    assert page.last_sequence == 3 and page.items[0].created_at is not None
    started = time.monotonic()
    assert store.list_changes(after=3, wait=1).items == []
    assert time.monotonic() - started >= 0.9


def test_watch_yields_changes_under_a_prefix(store: StoreClient) -> None:
    for key in ("in-1", "out-1", "in-2"):
        store.set_record(key, key)
    seen = []
    for change in store.watch(prefix="in-"):
        seen.append(change.key)
        if len(seen) == 2:
            break
    assert seen == ["in-1", "in-2"]


def test_webhooks_round_trip(store: StoreClient) -> None:
    hook = store.create_webhook("http://93.184.216.34/hook", event_types=["RECORD.CREATED"], key_prefix="x")
    assert hook.secret is not None and len(hook.secret) >= 32
    assert [w.id for w in store.list_webhooks()] == [hook.id]
    got = store.get_webhook(hook.id)
    assert got is not None and got.secret is None and got.event_types == ["RECORD.CREATED"]
    updated = store.update_webhook(hook.id, is_enabled=False)
    assert not updated.is_enabled and updated.key_prefix == "x"
    assert store.list_webhook_deliveries(hook.id) == []
    store.delete_webhook(hook.id)
    assert store.get_webhook(hook.id) is None
    with pytest.raises(NotFoundError):
        store.delete_webhook(hook.id)


@pytest.mark.anyio
async def test_async_watch_follows_new_writes(aclient: KvboxClientAsync) -> None:
    info = await aclient.key_value_stores().get_or_create(unique_name())
    store = aclient.key_value_store(info.id)
    seen: list[str] = []

    async def follow() -> None:
        async for change in store.watch(after=0, wait=5):
            seen.append(change.key)
            if len(seen) == 2:
                return

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.3)
            await store.set_record("first", 1)
            await store.set_record("second", 2)
    assert seen == ["first", "second"]
    await store.delete()


def test_verify_signature_checks_secret_body_and_age() -> None:
    body = b'{"eventType":"RECORD.CREATED"}'
    header = sign("s3cret", int(time.time()), body)
    assert verify_signature("s3cret", header, body)
    assert not verify_signature("other", header, body)
    assert not verify_signature("s3cret", header, body + b" ")
    old = sign("s3cret", int(time.time()) - 3600, body)
    assert not verify_signature("s3cret", old, body) and verify_signature("s3cret", old, body, tolerance_s=0)
    assert not verify_signature("s3cret", "garbage", body)
