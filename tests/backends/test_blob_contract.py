"""The `BlobStore` contract, run against every blob store through the `blobs` fixture (conftest.py)."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvbox.backends.base import BlobStore
from kvbox.core.errors import StorageError
from kvbox.core.ids import new_blob_name

pytestmark = pytest.mark.anyio

FAR_FUTURE_MS = int(time.time() * 1000) + 10 * 365 * 86_400_000  # past any upload-age margin


async def put(blobs: BlobStore, *parts: bytes) -> str:
    writer = await blobs.create()
    for part in parts:
        await writer.write(part)
    return await writer.commit()


async def read(blobs: BlobStore, blob_id: str) -> bytes:
    return b"".join([chunk async for chunk in await blobs.open(blob_id)])


async def listed(blobs: BlobStore) -> set[str]:
    return {blob_id async for blob_id in blobs.list_ids(older_than_ms=FAR_FUTURE_MS)}


async def test_write_commit_read_in_chunks(blobs: BlobStore) -> None:
    blob_id = await put(blobs, b"hello ", b"", b"world")
    assert re.fullmatch(r"[0-9a-f]{32}", blob_id)
    chunks = [chunk async for chunk in await blobs.open(blob_id)]
    assert b"".join(chunks) == b"hello world"
    assert len(chunks) > 1 and all(0 < len(c) <= 4 for c in chunks)  # streamed, not read whole


async def test_each_write_gets_a_fresh_id(blobs: BlobStore) -> None:
    first, second = await put(blobs, b"same"), await put(blobs, b"same")
    assert first != second
    await blobs.delete(first)
    assert await read(blobs, second) == b"same"


async def test_empty_body(blobs: BlobStore) -> None:
    assert await read(blobs, await put(blobs)) == b""


async def test_committed_blobs_are_listed(blobs: BlobStore) -> None:
    assert await listed(blobs) == set()
    ids = {await put(blobs, b"one"), await put(blobs, b"two" * 10)}
    assert await listed(blobs) == ids


async def test_abort_leaves_nothing(blobs: BlobStore) -> None:
    writer = await blobs.create()
    await writer.write(b"partial")
    await writer.abort()
    await writer.abort()  # twice is fine
    assert await listed(blobs) == set()


async def test_delete(blobs: BlobStore) -> None:
    blob_id = await put(blobs, b"doomed")
    kept = await put(blobs, b"kept")
    await blobs.delete(blob_id)
    await blobs.delete(blob_id)  # missing: no-op
    await blobs.delete(new_blob_name())
    with pytest.raises(StorageError):
        await read(blobs, blob_id)
    assert await listed(blobs) == {kept}


async def test_missing_blob_raises_on_open(blobs: BlobStore) -> None:
    with pytest.raises(StorageError):
        await blobs.open(new_blob_name())


async def test_an_open_blob_stays_readable_after_delete(blobs: BlobStore) -> None:
    blob_id = await put(blobs, b"abcdefghij")
    reader = await blobs.open(blob_id)
    await blobs.delete(blob_id)  # a newer write replaced it while this read was starting
    assert b"".join([chunk async for chunk in reader]) == b"abcdefghij"


async def test_a_reader_may_stop_early(blobs: BlobStore) -> None:
    blob_id = await put(blobs, b"abcdefghij")
    reader = await blobs.open(blob_id)
    assert await reader.__anext__() == b"abcd"
    await reader.aclose()
    assert await read(blobs, blob_id) == b"abcdefghij"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.binary(max_size=40), max_size=6))
async def test_arbitrary_bytes_round_trip(blobs: BlobStore, parts: list[bytes]) -> None:
    blob_id = await put(blobs, *parts)
    assert await read(blobs, blob_id) == b"".join(parts)
    await blobs.delete(blob_id)


# ranged reads


async def read_range(blobs: BlobStore, blob_id: str, start: int, end: int | None) -> list[bytes]:
    return [chunk async for chunk in await blobs.open(blob_id, start=start, end=end)]


async def test_a_range_streams_only_its_bytes(blobs: BlobStore) -> None:
    body = bytes(range(40))
    blob_id = await put(blobs, body)
    chunks = await read_range(blobs, blob_id, 5, 17)
    assert b"".join(chunks) == body[5:17]
    assert len(chunks) > 1 and all(0 < len(c) <= 4 for c in chunks)  # still streamed in chunks
    assert b"".join(await read_range(blobs, blob_id, 30, None)) == body[30:]
    assert b"".join(await read_range(blobs, blob_id, 0, 3)) == body[:3]
    assert b"".join(await read_range(blobs, blob_id, 38, 1000)) == body[38:]  # an end past the end stops there
    assert await read_range(blobs, blob_id, 40, None) == []  # from the end: nothing
    assert await read_range(blobs, blob_id, 7, 7) == []


async def test_a_range_of_a_missing_blob_raises_on_open(blobs: BlobStore) -> None:
    for start, end in ((3, 9), (0, 0), (5, None)):
        with pytest.raises(StorageError):
            await blobs.open(new_blob_name(), start=start, end=end)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=30), start=st.integers(0, 35), length=st.none() | st.integers(0, 35))
async def test_ranges_are_slices(blobs: BlobStore, body: bytes, start: int, length: int | None) -> None:
    blob_id = await put(blobs, body)
    end = None if length is None else start + length
    assert b"".join(await read_range(blobs, blob_id, start, end)) == body[start:end]
    await blobs.delete(blob_id)
