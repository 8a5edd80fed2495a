"""Content-Encoding names, Accept-Encoding negotiation and the bounded body decoders."""

from __future__ import annotations

import gzip
import itertools
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvbox.core.encoding import accepts, normalize_encoding
from kvbox.core.errors import InvalidBodyEncodingError, RequestTooLargeError, UnsupportedContentEncodingError
from kvbox.service.codecs import InflationGuard, decode_bytes, decode_stream, decoder_for

MiB = 1 << 20


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "deflate-zlib": ("deflate", zlib.compress),
    "deflate-raw": ("deflate", raw_deflate),
    "br": ("br", brotli.compress),
}


# --- Accept-Encoding negotiation -------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "encoding", "expected"),
    [
        (None, "gzip", False),
        ("", "gzip", False),
        ("gzip", "gzip", True),
        ("gzip", "br", False),
        ("GZIP", "gzip", True),
        ("x-gzip", "gzip", True),
        ("gzip, br, zstd, deflate", "br", True),
        ("gzip, br, zstd, deflate", "deflate", True),
        ("gzip;q=0", "gzip", False),
        ("gzip; q=0.000", "gzip", False),
        ("gzip ; q=0.5", "gzip", True),
        ("gzip;q=nonsense", "gzip", False),
        ("*", "br", True),
        ("*;q=0", "br", False),
        ("br;q=0, *", "br", False),  # an explicit refusal beats the wildcard
        ("*;q=0, gzip", "gzip", True),  # an explicit acceptance beats a refusing wildcard
        ("gzip, *;q=0", "br", False),
        ("deflate, gzip;q=1.0, *;q=0.5", "br", True),
        # identity can never be refused: the server always has the raw bytes to send
        (None, "identity", True),
        ("identity;q=0", "identity", True),
        ("*;q=0", "identity", True),
    ],
)
def test_accepts(header: str | None, encoding: str, expected: bool) -> None:
    assert accepts(header, encoding) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "identity"),
        ("", "identity"),
        ("identity", "identity"),
        ("gzip", "gzip"),
        (" GZip ", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
        ("br", "br"),
        ("BR", "br"),
    ],
)
def test_normalize_encoding(header: str | None, expected: str) -> None:
    assert normalize_encoding(header) == expected


@pytest.mark.parametrize("header", ["bla", "zstd", "compress", "gzip, br", "gzip;q=1"])
def test_unknown_encodings_are_415(header: str) -> None:
    with pytest.raises(UnsupportedContentEncodingError) as exc:
        normalize_encoding(header)
    assert exc.value.status == 415
    assert exc.value.type == "unsupported-content-encoding"
    assert exc.value.message == f'Content-Encoding "{header}" is not supported.'


# --- decoders ---------------------------------------------------------------------------


def feed_all(encoding: str, chunks: list[bytes]) -> bytes:
    decoder = decoder_for(encoding)
    out = bytearray()
    for chunk in chunks:
        for piece in decoder.feed(chunk):
            out += piece
    for piece in decoder.finish():
        out += piece
    return bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("codec", list(ENCODERS))
@settings(max_examples=40)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=6))
def test_round_trip_in_any_chunking(codec: str, data: bytes, cuts: list[int]) -> None:
    encoding, encode = ENCODERS[codec]
    encoded = encode(data)
    assert feed_all(encoding, split(encoded, cuts)) == data
    assert decode_bytes(encoded, encoding, limit=len(data)) == data


@pytest.mark.parametrize("codec", list(ENCODERS))
def test_round_trip_of_output_larger_than_one_decoder_step(codec: str) -> None:
    encoding, encode = ENCODERS[codec]
    data = bytes(range(256)) * 8192 + b"tail"  # 2 MiB + 4: many bounded output steps
    assert feed_all(encoding, [encode(data)]) == data


@pytest.mark.anyio
@pytest.mark.parametrize("codec", list(ENCODERS))
async def test_decode_stream(codec: str) -> None:
    encoding, encode = ENCODERS[codec]
    data = b"streamed body " * 20_000
    encoded = encode(data)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(encoded), 777):
            yield encoded[i : i + 777]

    assert b"".join([c async for c in decode_stream(chunks(), encoding)]) == data


def test_identity_decoder_passes_bytes_through() -> None:
    assert feed_all("identity", [b"ab", b"", b"c"]) == b"abc"
    assert decode_bytes(b"\x1f\x8b not gzip", "identity", limit=1) == b"\x1f\x8b not gzip"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("body", [b"this is not compressed at all", b"\x00" * 64, b"\xff" * 7])
def test_corrupt_input_is_refused(encoding: str, body: bytes) -> None:
    with pytest.raises(InvalidBodyEncodingError) as exc:
        feed_all(encoding, [body])
    assert exc.value.status == 400


@pytest.mark.parametrize("codec", list(ENCODERS))
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_truncated_input_is_refused(codec: str, keep: float) -> None:
    encoding, encode = ENCODERS[codec]
    encoded = encode(bytes(range(256)) * 64)
    with pytest.raises(InvalidBodyEncodingError):
        feed_all(encoding, [encoded[: int(len(encoded) * keep)]])


def test_trailing_garbage_after_a_gzip_stream_is_refused() -> None:
    with pytest.raises(InvalidBodyEncodingError):
        feed_all("gzip", [gzip.compress(b"payload") + b"junk"])


def test_decode_bytes_is_bounded() -> None:
    with pytest.raises(RequestTooLargeError) as exc:
        decode_bytes(gzip.compress(b"x" * 1001), "gzip", limit=1000)
    assert exc.value.status == 413
    assert decode_bytes(gzip.compress(b"x" * 1000), "gzip", limit=1000) == b"x" * 1000


# --- decompression bombs ------------------------------------------------------------------


def _bomb(encoding: str, size: int) -> bytes:
    zeros = bytes(MiB)
    if encoding == "br":
        c = brotli.Compressor(quality=5)
        body = b"".join(c.process(zeros) for _ in range(size // MiB))
        tail: bytes = c.finish()  # brotli ships no type information
        return body + tail
    z = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else zlib.MAX_WBITS)
    return b"".join(z.compress(zeros) for _ in range(size // MiB)) + z.flush()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {encoding: _bomb(encoding, 50 * MiB) for encoding in ("gzip", "deflate", "br")}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_inflation_guard_refuses_a_bomb_without_inflating_it(encoding: str, bombs: dict[str, bytes]) -> None:
    bomb = bombs[encoding]
    assert len(bomb) < 60_000  # 50 MiB of zeros
    limit = 4 * MiB
    guard = InflationGuard(encoding, limit)
    tracemalloc.start()
    try:
        with pytest.raises(RequestTooLargeError) as exc:
            guard.feed(bomb)
            guard.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.status == 413
    # It stopped one bounded step past the limit, and never held more than a few steps in memory.
    assert limit < guard.decoded_size <= limit + MiB
    assert peak < 2 * MiB


def test_inflation_guard_accepts_bodies_within_the_limit() -> None:
    guard = InflationGuard("gzip", 10_000)
    body = gzip.compress(b"y" * 10_000)
    guard.feed(body[:10])
    guard.feed(body[10:])
    guard.finish()
    assert guard.decoded_size == 10_000


def test_inflation_guard_reports_corrupt_input() -> None:
    guard = InflationGuard("br", MiB)
    with pytest.raises(InvalidBodyEncodingError):
        guard.feed(b"definitely not brotli")
        guard.finish()
