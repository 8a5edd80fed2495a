"""Compare-and-set writes and range reads through the client, sync and async, against a real
`kvbox serve` process."""

from __future__ import annotations

import gzip

import pytest

from kvbox.client import (
    PreconditionFailedError,
    RangeNotSatisfiableError,
    StoreClient,
    StoreClientAsync,
)

BIG = bytes(range(256)) * 400  # 100 KiB: a blob on the server
TEXT = "".join(f"line {i}\n" for i in range(5000))  # compressed by the client on upload


def test_etags_and_compare_and_set(store: StoreClient) -> None:
    first = store.set_record("counter", {"n": 1})
    assert first is not None and first.startswith('"')
    record = store.get_record("counter")
    assert record is not None and record.etag == first and record.value == {"n": 1}
    second = store.set_record("counter", {"n": 2}, if_match=record.etag)
    assert second is not None and second != first
    with pytest.raises(PreconditionFailedError) as caught:
        store.set_record("counter", {"n": 99}, if_match=first)  # someone else wrote meanwhile
    assert caught.value.status == 412 and caught.value.type == "precondition-failed"
    assert store.set_record("counter", {"n": 3}, if_match=second.strip('"')) is not None  # bare tags work too
    again = store.get_record("counter")
    assert again is not None and again.value == {"n": 3}


def test_create_only_and_conditional_delete(store: StoreClient) -> None:
    assert store.set_record("lock", "mine", if_none_match="*") is not None
    with pytest.raises(PreconditionFailedError):
        store.set_record("lock", "theirs", if_none_match="*")
    with pytest.raises(PreconditionFailedError):
        store.delete_record("lock", if_match='"stale"')
    record = store.get_record("lock")
    assert record is not None and record.value == "mine" and record.etag is not None
    store.delete_record("lock", if_match=record.etag)
    assert store.get_record("lock") is None
    with pytest.raises(PreconditionFailedError):
        store.delete_record("lock", if_match="*")
    store.delete_record("lock")  # unconditional: a missing record is fine


def test_ranges_of_a_stored_record(store: StoreClient) -> None:
    store.set_record("big", BIG, "video/mp4")
    part = store.get_record_range("big", 1000, 300)
    assert part is not None and part.value == BIG[1000:1300] and part.content_type == "video/mp4"
    tail = store.get_record_range("big", len(BIG) - 10)
    assert tail is not None and tail.value == BIG[-10:]
    with store.stream_record("big", offset=50_000, length=20_000) as stream:
        assert stream is not None and stream.size == 20_000 and stream.etag == part.etag
        assert stream.response.status_code == 206
        assert b"".join(stream.iter_bytes(4096)) == BIG[50_000:70_000]
    with pytest.raises(RangeNotSatisfiableError):
        store.get_record_range("big", len(BIG))
    assert store.get_record_range("missing", 0, 10) is None
    for bad in ((-1, 5), (0, 0), (3, -1)):
        with pytest.raises(ValueError):
            store.get_record_range("big", *bad)


def test_ranges_of_a_compressed_record_count_its_content(store: StoreClient) -> None:
    """The client compresses text on upload; the server decodes it for a range read and sends it
    whole, and the client skips to the offset itself: offsets count the content."""
    store.set_record("log", TEXT)
    raw = store.get_record_as_bytes("log")
    assert raw is not None and raw.value == TEXT.encode()
    part = store.get_record_range("log", 12_345, 1000)
    assert part is not None and part.value == TEXT.encode()[12_345:13_345]
    with store.stream_record("log", offset=40_000) as stream:
        assert stream is not None and stream.response.status_code == 200
        assert b"".join(stream.iter_bytes(777)) == TEXT.encode()[40_000:]
    store.set_record("packed", gzip.compress(BIG), "application/octet-stream", content_encoding="gzip")
    packed = store.get_record_range("packed", 7, 9)
    assert packed is not None and packed.value == BIG[7:16]


@pytest.mark.anyio
async def test_async_twin(astore: StoreClientAsync) -> None:
    etag = await astore.set_record("k", b"0123456789", if_none_match="*")
    with pytest.raises(PreconditionFailedError):
        await astore.set_record("k", b"x", if_none_match="*")
    assert etag is not None and await astore.set_record("k", b"abcdefghij", if_match=etag) is not None
    part = await astore.get_record_range("k", 3, 4)
    assert part is not None and part.value == b"defg"
    async with astore.stream_record("k", offset=8) as stream:
        assert stream is not None
        assert b"".join([c async for c in stream.aiter_bytes()]) == b"ij"
    with pytest.raises(RangeNotSatisfiableError):
        await astore.get_record_range("k", 10)
    record = await astore.get_record("k")
    assert record is not None
    with pytest.raises(PreconditionFailedError):
        await astore.delete_record("k", if_match=etag)
    await astore.delete_record("k", if_match=record.etag)
    assert await astore.get_record("k") is None


def test_the_last_bytes(store: StoreClient) -> None:
    store.set_record("big", BIG, "video/mp4")
    tail = store.get_record_range("big", -100)
    assert tail is not None and tail.value == BIG[-100:]
    store.set_record("log", TEXT)  # compressed: the server sends it whole, the client keeps the end
    with store.stream_record("log", offset=-30) as stream:
        assert stream is not None and stream.response.status_code == 200
        assert b"".join(stream.iter_bytes(100)) == TEXT.encode()[-30:]
    whole = store.get_record_range("big", -(len(BIG) + 10))
    assert whole is not None and whole.value == BIG
    with pytest.raises(ValueError):
        store.get_record_range("big", -5, 2)
