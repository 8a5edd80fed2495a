"""The asynchronous client against a real server: the twin of the sync tests' main paths."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator

import httpx
import pytest

from kvbox.client import InvalidRequestError, KvboxClientAsync, NotFoundError, StoreClientAsync

from .conftest import unique_name, value_of

pytestmark = pytest.mark.anyio


async def test_store_lifecycle(aclient: KvboxClientAsync) -> None:
    name = unique_name()
    created = await aclient.key_value_stores().get_or_create(name)
    assert (await aclient.key_value_stores().get_or_create(name)).id == created.id
    store = aclient.key_value_store(created.id)
    info = await store.get()
    assert info is not None and info.name == name
    assert created.id in [s.id async for s in aclient.key_value_stores().iterate()]
    assert (await store.update(name=None)).name is None
    await store.delete()
    await store.delete()
    assert await store.get() is None


async def test_records(astore: StoreClientAsync) -> None:
    await astore.set_record("j", {"x": [1, 2]})
    await astore.set_record("t", "text")
    await astore.set_record("b", b"\x01\x02")
    assert value_of(await astore.get_record("j")) == {"x": [1, 2]}
    assert value_of(await astore.get_record("t")) == "text"
    assert value_of(await astore.get_record_as_bytes("j")) == b'{"x": [1, 2]}'
    assert await astore.record_exists("b")
    await astore.delete_record("b")
    assert not await astore.record_exists("b")
    assert await astore.get_record("b") is None


async def test_keys(astore: StoreClientAsync) -> None:
    for i in range(5):
        await astore.set_record(f"k{i}", i)
    assert [i.key async for i in astore.iterate_keys(limit=3)] == ["k0", "k1", "k2"]
    assert [i.key for i in (await astore.list_keys(limit=2)).items] == ["k0", "k1"]


async def test_stream_upload_from_async_iterator_and_download(astore: StoreClientAsync) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(20):
            yield bytes([i]) * 10_000

    await astore.set_record("s", chunks(), "application/octet-stream")
    async with astore.stream_record("s") as rec:
        assert rec is not None and rec.content_type == "application/octet-stream"
        got = b"".join([c async for c in rec.aiter_bytes()])
    assert got == b"".join(bytes([i]) * 10_000 for i in range(20))
    async with astore.stream_record("missing") as rec:
        assert rec is None


async def test_public_urls_and_zip(astore: StoreClientAsync) -> None:
    await astore.set_record("p", "public")
    url = await astore.get_record_public_url("p")
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(url)).text == "public"
        keys_url = await astore.create_keys_public_url()
        assert (await anonymous.get(keys_url)).json()["data"]["count"] == 1
    buffer = io.BytesIO()
    assert await astore.download_zip(buffer) > 0
    with zipfile.ZipFile(buffer) as zf:
        assert zf.read("p") == b"public"


async def test_errors(aclient: KvboxClientAsync, astore: StoreClientAsync) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await astore.set_record("bad key", 1)
    assert caught.value.type == "invalid-record-key"
    with pytest.raises(NotFoundError):
        await aclient.key_value_store("no-such-store-ever").list_keys()
