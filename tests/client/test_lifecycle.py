"""The client's record lifecycle calls against the real server: expiring writes, store rules,
listing fields, deleting by prefix (sync and async twins)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from kvbox.client import ExpiryRule, KvboxClient, KvboxClientAsync, StoreClient, StoreClientAsync

from .conftest import unique_name


def test_expiring_writes_show_their_instant(store: StoreClient) -> None:
    before = datetime.now(UTC)
    store.set_record("hour", {"a": 1}, expires_in=timedelta(hours=1))
    store.set_record("seconds", "x", expires_in=90.2)  # rounded up to 91 s
    at = datetime(2099, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    store.set_record("fixed", b"b", expires_at=at)
    store.set_record("plain", b"p")
    items = {i.key: i for i in store.list_keys().items}
    hour = items["hour"].expires_at
    assert hour is not None and timedelta(minutes=59) < hour - before < timedelta(minutes=61)
    seconds = items["seconds"].expires_at
    assert seconds is not None and timedelta(seconds=90) < seconds - before < timedelta(seconds=95)
    assert items["fixed"].expires_at == at
    assert items["plain"].expires_at is None
    assert items["hour"].content_type == "application/json; charset=utf-8"
    assert items["plain"].etag is not None and items["plain"].etag.startswith('"')
    modified = items["plain"].modified_at
    assert modified is not None and abs(modified - before) < timedelta(minutes=1)


def test_a_record_is_gone_after_its_expiry(store: StoreClient) -> None:
    store.set_record("brief", b"x", expires_in=1)
    assert store.get_record("brief") is not None
    deadline = time.monotonic() + 10
    while store.get_record("brief") is not None:
        assert time.monotonic() < deadline, "the record did not expire"
        time.sleep(0.2)
    assert [i.key for i in store.list_keys().items] == []


@pytest.mark.parametrize(
    "kwargs", [{"expires_in": 0}, {"expires_in": -1}, {"expires_in": 5, "expires_at": datetime(2099, 1, 1)}]
)
def test_bad_expiry_is_refused_before_sending(store: StoreClient, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        store.set_record("k", b"x", **kwargs)  # type: ignore[arg-type]
    assert store.get_record("k") is None


def test_store_rules_and_delete_prefix(client: KvboxClient, store: StoreClient) -> None:
    info = store.update(record_expiry=[ExpiryRule("tmp-", 3600), {"prefix": "", "expireAfterSecs": 86400}])
    assert info.record_expiry == [ExpiryRule("", 86400), ExpiryRule("tmp-", 3600)]
    assert store.get() is not None and store.get().record_expiry == info.record_expiry  # type: ignore[union-attr]
    for key in ("tmp-1", "tmp-2", "keep"):
        store.set_record(key, b"v")
    items = {i.key: i.expires_at for i in store.list_keys().items}
    assert items["tmp-1"] is not None and items["keep"] is not None and items["tmp-1"] < items["keep"]
    assert store.delete_prefix("tmp-") == 2
    assert [i.key for i in store.list_keys().items] == ["keep"]
    assert store.update(record_expiry=[]).record_expiry == []
    assert store.delete_prefix("") == 1
    assert store.list_keys().items == []


@pytest.mark.anyio
async def test_the_async_twin(aclient: KvboxClientAsync) -> None:
    info = await aclient.key_value_stores().get_or_create(unique_name())
    store: StoreClientAsync = aclient.key_value_store(info.id)
    try:
        await store.set_record("a-1", b"x", expires_in=timedelta(minutes=5))
        await store.set_record("a-2", b"y")
        items = (await store.list_keys()).items
        assert [i.expires_at is not None for i in items] == [True, False]
        updated = await store.update(record_expiry=[ExpiryRule("a-", 60)])
        assert updated.record_expiry == [ExpiryRule("a-", 60)]
        assert await store.delete_prefix("a-") == 2
        assert (await store.list_keys()).items == []
    finally:
        await store.delete()
