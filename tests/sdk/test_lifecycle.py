"""The SDK's record lifecycle: `set_value(..., expires_in=)` and `delete_prefix` in both modes,
and local folders keeping a record's expiry in its sidecar."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kvbox.core.clock import FakeClock
from kvbox.sdk import KeyValueStore, KeyValueStoreSync
from kvbox.sdk.local import open_store_folder

T0 = 1_767_225_600_000
JSON = "application/json; charset=utf-8"  # what a .json file stands for: no sidecar needed


@pytest.mark.anyio
async def test_expiring_values_and_delete_prefix(kvs: KeyValueStore) -> None:
    before = datetime.now(UTC)
    await kvs.set_value("tmp-1", {"a": 1}, expires_in=3600)
    await kvs.set_value("tmp-2", "text", expires_in=timedelta(minutes=5))
    await kvs.set_value("keep", b"bytes")
    assert await kvs.get_value("tmp-1") == {"a": 1}
    items = {i.key: i for i in await kvs.list_keys()}
    one = items["tmp-1"].expires_at
    assert one is not None and timedelta(minutes=59) < one - before < timedelta(minutes=61)
    assert items["keep"].expires_at is None
    assert items["tmp-1"].content_type is not None and items["tmp-1"].content_type.startswith("application/json")
    assert items["keep"].modified_at is not None
    assert await kvs.delete_prefix("tmp-") == 2
    assert [i.key for i in await kvs.list_keys()] == ["keep"]
    with pytest.raises(ValueError):
        await kvs.set_value("bad", 1, expires_in=0)


def test_the_sync_twin(kvs_sync: KeyValueStoreSync) -> None:
    kvs_sync.set_value("a", 1, expires_in=60)
    kvs_sync.set_value("b", 2)
    assert [i.expires_at is not None for i in kvs_sync.list_keys()] == [True, False]
    assert kvs_sync.delete_prefix("") == 2
    assert kvs_sync.list_keys() == []


def test_a_local_record_expires_by_its_sidecar(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = open_store_folder(str(tmp_path / "s"))
    store.clock = clock
    store.write("page", b'{"a": 1}', JSON, expires_in=10)
    store.write("plain", b"{}", JSON)
    side = json.loads((tmp_path / "s" / "page.json.__metadata__.json").read_text())
    assert side == {"key": "page", "content_type": JSON, "size": 8, "expires_at": "2026-01-01T00:00:10.000Z"}
    assert not (tmp_path / "s" / "plain.json.__metadata__.json").exists()
    assert store.read("page") == (b'{"a": 1}', JSON)
    clock.advance(seconds=10)
    assert store.read("page") is None and not store.exists("page")
    assert [i.key for i in list(store.keys())] == ["plain"]
    # Another process (another store object) sees it gone too, and a new write starts afresh.
    other = open_store_folder(str(tmp_path / "s"))
    other.clock = clock
    assert [i.key for i in list(other.keys())] == ["plain"]
    other.write("page", b"[]", JSON)
    assert not (tmp_path / "s" / "page.json.__metadata__.json").exists()
    assert store.read("page") == (b"[]", JSON)
    assert other.delete_prefix("p") == 2


def test_expired_records_are_deleted_by_prefix_but_not_counted(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = open_store_folder(str(tmp_path / "s"))
    store.clock = clock
    store.write("a", b"x", "text/plain", expires_in=1)
    store.write("b", b"y", "text/plain")
    clock.advance(seconds=1)
    assert store.delete_prefix("") == 1
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["__metadata__.json"]
