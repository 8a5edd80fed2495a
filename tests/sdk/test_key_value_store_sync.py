"""`KeyValueStoreSync`, the blocking twin, in both modes: the same rules as the async store."""

from __future__ import annotations

import threading

import pytest

from kvbox.core.errors import InvalidRecordKeyError
from kvbox.sdk import Configuration, KeyValueStoreSync, RecordMetadata

from .conftest import unique_name


def test_values_and_deletion(kvs_sync: KeyValueStoreSync) -> None:
    kvs_sync.set_value("j", {"a": [1]})
    kvs_sync.set_value("t", "text")
    kvs_sync.set_value("b", b"\x00")
    kvs_sync.set_value("n", 7)
    kvs_sync.set_value("x", "<x/>", "application/xml")
    assert kvs_sync.get_value("j") == {"a": [1]}
    assert kvs_sync.get_value("t") == "text"
    assert kvs_sync.get_value("b") == b"\x00"
    assert kvs_sync.get_value("n") == 7
    assert kvs_sync.get_value("x") == "<x/>"
    assert kvs_sync.get_value("missing", 5) == 5
    kvs_sync.set_value("j", None)
    assert not kvs_sync.record_exists("j")
    kvs_sync.delete_value("t")
    kvs_sync.delete_value("t")
    assert sorted(kvs_sync) == ["b", "n", "x"]
    with pytest.raises(InvalidRecordKeyError):
        kvs_sync.set_value("a b", 1)


def test_listing(kvs_sync: KeyValueStoreSync) -> None:
    for i in range(6):
        kvs_sync.set_value(f"k{i}", i)
    assert [i.key for i in kvs_sync.list_keys(limit=4)] == ["k0", "k1", "k2", "k3"]
    assert [i.key for i in kvs_sync.iterate_keys(exclusive_start_key="k3")] == ["k4", "k5"]
    seen: list[tuple[str, int]] = []
    kvs_sync.for_each_key(lambda key, index, info: seen.append((key, index)))
    assert seen == [(f"k{i}", i) for i in range(6)]
    assert all(isinstance(i, RecordMetadata) and i.size == 1 for i in kvs_sync.list_keys())


def test_open_cache_and_metadata(config: Configuration) -> None:
    name = unique_name()
    store = KeyValueStoreSync.open(name=name, configuration=config)
    assert KeyValueStoreSync.open(name=name, configuration=config) is store
    assert KeyValueStoreSync.open(id=store.id, configuration=config) is store
    assert store.get_metadata().name == name
    store.set_value("url", "x")
    assert store.get_public_url("url")
    store.drop()
    KeyValueStoreSync.close_all()


def test_threads_share_a_store(kvs_sync: KeyValueStoreSync) -> None:
    def work(n: int) -> None:
        for i in range(10):
            kvs_sync.set_value(f"t{n}-{i}", {"n": n, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(kvs_sync.list_keys()) == 40
    assert kvs_sync.get_value("t3-9") == {"n": 3, "i": 9}
