"""One behaviour suite for `KeyValueStore`, run in local mode and in remote mode (real server)."""

from __future__ import annotations

from typing import Any

import pytest

from kvbox.core.errors import InvalidRecordKeyError, InvalidStoreNameError, StoreNotFoundError
from kvbox.sdk import Configuration, KeyValueStore, RecordMetadata

from .conftest import unique_name

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("value", "content_type", "expected"),
    [
        ({"a": {"b": [1, 2.5, None, True]}}, None, {"a": {"b": [1, 2.5, None, True]}}),
        ([1, "two", {"three": 3}], None, [1, "two", {"three": 3}]),
        ("plain text", None, "plain text"),
        ("žluťoučký kůň 🐴", None, "žluťoučký kůň 🐴"),
        ('{"looks": "like json"}', None, '{"looks": "like json"}'),
        (b"\x00\x01\xfe\xff", None, b"\x00\x01\xfe\xff"),
        # Numbers and booleans are JSON in both modes (crawlee's file system stores them as text).
        (42, None, 42),
        (3.5, None, 3.5),
        (False, None, False),
        (0, None, 0),
        ("", None, ""),
        ({}, None, {}),
        ("<html></html>", "text/html", "<html></html>"),
        ("<root/>", "application/xml", "<root/>"),
        ("a,b\n1,2\n", "text/csv", "a,b\n1,2\n"),
        ('{"x": 1}', "application/json", {"x": 1}),
        ({"@id": "x"}, "application/ld+json", {"@id": "x"}),
        (b"\x89PNG\r\n", "image/png", b"\x89PNG\r\n"),
        (b"%PDF-1.7", "application/pdf", b"%PDF-1.7"),
        ("bytes as str", "application/octet-stream", b"bytes as str"),
    ],
)
async def test_values_round_trip(kvs: KeyValueStore, value: Any, content_type: str | None, expected: Any) -> None:
    await kvs.set_value("value", value, content_type)
    got = await kvs.get_value("value")
    assert got == expected and type(got) is type(expected)


async def test_missing_key_gives_the_default(kvs: KeyValueStore) -> None:
    assert await kvs.get_value("missing") is None
    assert await kvs.get_value("missing", "fallback") == "fallback"
    await kvs.set_value("zero", 0)
    assert await kvs.get_value("zero", "fallback") == 0


async def test_set_value_none_deletes(kvs: KeyValueStore) -> None:
    await kvs.set_value("k", {"x": 1})
    await kvs.set_value("k", None)
    assert not await kvs.record_exists("k")
    assert await kvs.get_value("k", "gone") == "gone"
    await kvs.set_value("never-there", None)


async def test_delete_and_exists(kvs: KeyValueStore) -> None:
    assert not await kvs.record_exists("k")
    await kvs.set_value("k", "v")
    assert await kvs.record_exists("k")
    await kvs.delete_value("k")
    assert not await kvs.record_exists("k")
    await kvs.delete_value("k")


async def test_overwrite_with_another_type(kvs: KeyValueStore) -> None:
    await kvs.set_value("k", {"json": True})
    await kvs.set_value("k", "now text")
    assert await kvs.get_value("k") == "now text"
    await kvs.set_value("k", b"now bytes", "image/png")
    assert await kvs.get_value("k") == b"now bytes"
    assert [i.key for i in await kvs.list_keys()] == ["k"]


async def test_listing(kvs: KeyValueStore) -> None:
    assert await kvs.list_keys() == []
    keys = [f"key-{i:02d}" for i in range(12)]
    for key in reversed(keys):
        await kvs.set_value(key, {"k": key})
    listed = await kvs.list_keys()
    assert [i.key for i in listed] == keys
    assert all(isinstance(i, RecordMetadata) and i.size == len(f'{{"k": "{i.key}"}}') for i in listed)
    assert [i.key for i in await kvs.list_keys(limit=5)] == keys[:5]
    assert [i.key for i in await kvs.list_keys(exclusive_start_key="key-03", limit=3)] == keys[4:7]
    assert [i.key for i in await kvs.list_keys(exclusive_start_key="key-055")] == keys[6:]
    assert [i.key async for i in kvs.iterate_keys()] == keys
    assert [i.key async for i in kvs.iterate_keys(limit=2)] == keys[:2]
    assert [key async for key in kvs] == keys


async def test_for_each_key_with_sync_and_async_callbacks(kvs: KeyValueStore) -> None:
    for key in ("c", "a", "b"):
        await kvs.set_value(key, key)
    seen: list[tuple[str, int, int | None]] = []
    await kvs.for_each_key(lambda key, index, info: seen.append((key, index, info.size)))
    assert seen == [("a", 0, 1), ("b", 1, 1), ("c", 2, 1)]

    async def collect(key: str, index: int, info: RecordMetadata) -> None:
        seen.append((key, index, None))

    seen.clear()
    await kvs.for_each_key(collect, exclusive_start_key="a")
    assert seen == [("b", 0, None), ("c", 1, None)]


async def test_keys_follow_the_platform_rule(kvs: KeyValueStore) -> None:
    for bad in ("", "a/b", "with space", "x" * 257, "ü"):
        with pytest.raises(InvalidRecordKeyError):
            await kvs.set_value(bad, 1)
    await kvs.set_value("ok!-_.'()" + "x" * 247, 1)


async def test_large_value(kvs: KeyValueStore) -> None:
    blob = bytes(range(256)) * 8192  # 2 MiB
    await kvs.set_value("blob", blob)
    assert await kvs.get_value("blob") == blob
    doc = {"rows": [{"i": i, "s": "text" * 10} for i in range(20_000)]}
    await kvs.set_value("doc", doc)
    assert await kvs.get_value("doc") == doc


async def test_open_gives_the_same_object(config: Configuration) -> None:
    name = unique_name()
    store = await KeyValueStore.open(name=name, configuration=config)
    assert store.name == name and len(store.id) == 17
    assert await KeyValueStore.open(name=name, configuration=config) is store
    assert await KeyValueStore.open(id=store.id, configuration=config) is store
    default = await KeyValueStore.open(configuration=config)
    assert default is not store
    assert await KeyValueStore.open(configuration=config) is default
    assert await KeyValueStore.open(id=default.id, configuration=config) is default
    await store.drop()
    await KeyValueStore.close_all()


async def test_data_survives_reopening(config: Configuration) -> None:
    name = unique_name()
    store = await KeyValueStore.open(name=name, configuration=config)
    await store.set_value("kept", {"v": 1})
    await KeyValueStore.close_all()
    again = await KeyValueStore.open(name=name, configuration=config)
    assert again is not store and again.id == store.id
    assert await again.get_value("kept") == {"v": 1}
    by_id = await KeyValueStore.open(id=store.id, configuration=config)
    assert by_id is again
    meta = await again.get_metadata()
    assert meta.id == store.id and meta.name == name and meta.created_at is not None
    await again.drop()
    await KeyValueStore.close_all()


async def test_drop_then_reopen_is_empty(config: Configuration) -> None:
    name = unique_name()
    store = await KeyValueStore.open(name=name, configuration=config)
    await store.set_value("k", 1)
    await store.drop()
    fresh = await KeyValueStore.open(name=name, configuration=config)
    assert fresh is not store and fresh.id != store.id
    assert await fresh.list_keys() == []
    await fresh.drop()
    await KeyValueStore.close_all()


async def test_open_arguments_are_checked(config: Configuration) -> None:
    with pytest.raises(ValueError):
        await KeyValueStore.open(name="a", id="b", configuration=config)
    for bad in ("-leading", "under_score", "../outside", "with/slash", "x" * 64):
        with pytest.raises(InvalidStoreNameError):
            await KeyValueStore.open(name=bad, configuration=config)
    with pytest.raises(StoreNotFoundError):
        await KeyValueStore.open(id="AAAAAAAAAAAAAAAAA", configuration=config)
    await KeyValueStore.close_all()


async def test_default_store_holds_data(config: Configuration) -> None:
    store = await KeyValueStore.open(configuration=config)
    await store.set_value("OUTPUT", {"done": True})
    await KeyValueStore.close_all()
    store = await KeyValueStore.open(configuration=config)
    assert await store.get_value("OUTPUT") == {"done": True}
    await store.delete_value("OUTPUT")
    await KeyValueStore.close_all()


async def test_public_url(kvs: KeyValueStore, config: Configuration) -> None:
    await kvs.set_value("page", "<p>hi</p>", "text/html")
    url = await kvs.get_public_url("page")
    if config.remote:
        import httpx

        assert url.startswith(f"{config.api_url}/v2/key-value-stores/{kvs.id}/records/page?signature=")
        assert httpx.get(url).text == "<p>hi</p>"
    else:
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        assert url.startswith("file://") and url.endswith("/page.html")
        with open(url2pathname(urlparse(url).path), encoding="utf-8") as f:
            assert f.read() == "<p>hi</p>"
