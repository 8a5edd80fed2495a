"""Request bodies: compression rules, streamed uploads and downloads with bounded memory."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import brotli
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ServerProcess
from kvbox.client import KvboxClient, StoreClient
from kvbox.client._compression import Compression, compress, compress_chunks, is_compressible


def capture() -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(201, json={})

    return handle, seen


def put(value: object, content_type: str | None = None, compression: Compression | None = "gzip") -> httpx.Request:
    handler, seen = capture()
    with KvboxClient(
        "t", api_url="http://kvbox.test", transport=httpx.MockTransport(handler), compression=compression
    ) as client:
        client.key_value_store("s").set_record("k", value, content_type)
    return seen[0]


def test_small_bodies_are_sent_as_they_are() -> None:
    request = put({"x": "y" * 900})
    assert "content-encoding" not in request.headers
    assert json.loads(request.content) == {"x": "y" * 900}


def test_bodies_of_1_kib_or_more_are_gzipped() -> None:
    value = {"x": "y" * 1100}
    request = put(value)
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(gzip.decompress(request.content)) == value


def test_brotli_on_request() -> None:
    request = put("t" * 5000, compression="brotli")
    assert request.headers["content-encoding"] == "br"
    assert brotli.decompress(request.content) == b"t" * 5000


def test_compression_can_be_turned_off() -> None:
    assert "content-encoding" not in put("t" * 5000, compression=None).headers


def test_already_compressed_media_are_not_compressed_again() -> None:
    for ctype in ("image/png", "video/mp4", "application/zip", "font/woff2"):
        request = put(b"\x00" * 5000, ctype)
        assert "content-encoding" not in request.headers, ctype
    assert put(b"<svg/>" * 500, "image/svg+xml").headers["content-encoding"] == "gzip"


def test_streams_are_chunked_and_compressed_on_the_fly() -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"abc" * 1000

    request = put(chunks(), "text/plain")
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["transfer-encoding"] == "chunked"
    assert gzip.decompress(request.content) == b"abc" * 10_000


def test_a_short_stream_goes_uncompressed_with_a_length() -> None:
    request = put(iter([b"ab", b"cd"]))
    assert "content-encoding" not in request.headers
    assert request.headers["content-length"] == "4" and request.content == b"abcd"


def test_a_file_of_known_size_is_sent_with_its_length(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG" * 1000)
    request = put(path, "image/png")
    assert request.headers["content-length"] == "4000" and request.content == b"\x89PNG" * 1000
    request = put(io.BytesIO(b"z" * 3000), "text/plain")
    assert gzip.decompress(request.content) == b"z" * 3000


def test_compressible_rule() -> None:
    assert is_compressible("application/json; charset=utf-8")
    assert is_compressible("application/ld+json") and is_compressible("text/html")
    assert is_compressible("application/octet-stream")
    assert not is_compressible("image/jpeg") and not is_compressible("application/gzip")


@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_streaming_compression_round_trips(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert zlib.decompress(b"".join(compress_chunks(iter(parts), "gzip")), 16 + zlib.MAX_WBITS) == data
    assert brotli.decompress(b"".join(compress_chunks(iter(parts), "brotli"))) == data
    assert gzip.decompress(compress(data, "gzip")) == data


@pytest.mark.parametrize("compression", ["gzip", "brotli"])
def test_compressed_uploads_read_back_from_the_server(
    server: ServerProcess, token: str, compression: Compression
) -> None:
    with KvboxClient(token, api_url=server.url, compression=compression) as client:
        info = client.key_value_stores().get_or_create()
        store = client.key_value_store(info.id)
        value = {"items": [{"n": i, "text": "lorem ipsum " * 5} for i in range(200)]}
        store.set_record("big", value)
        record = store.get_record("big")
        assert record is not None and record.value == value
        store.delete()


def _pattern(i: int) -> bytes:
    return (i.to_bytes(4, "big") * 16_384)[:65_536]


def test_large_records_stream_with_bounded_memory(store: StoreClient) -> None:
    """32 MiB up and down; Python allocations stay a small multiple of one chunk."""
    chunks = 512  # of 64 KiB

    def source() -> Iterator[bytes]:
        for i in range(chunks):
            yield _pattern(i)

    tracemalloc.start()
    try:
        # A media type that is not compressed, so the bytes travel as they are.
        store.set_record("huge", source(), "video/mp4")
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        received = 0
        with store.stream_record("huge") as rec:
            assert rec is not None and rec.size == chunks * 65_536
            position = 0
            for chunk in rec.iter_bytes():
                expected = b"".join(
                    _pattern(i) for i in range(position // 65_536, (position + len(chunk)) // 65_536 + 1)
                )
                offset = position % 65_536
                assert chunk == expected[offset : offset + len(chunk)]
                position += len(chunk)
                received += len(chunk)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == chunks * 65_536
    assert upload_peak < 4 * 1024 * 1024, upload_peak
    assert download_peak < 4 * 1024 * 1024, download_peak
