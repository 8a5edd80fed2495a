"""`Range` parsing (RFC 9110 section 14) and the headers of a partial response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.errors import RangeNotSatisfiableError
from kvbox.core.ranges import (
    ByteRange,
    aslice_chunks,
    parse_content_range,
    parse_range,
    range_header,
    slice_chunks,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", ByteRange(0, 1)),
        ("bytes=0-1023", ByteRange(0, 100)),  # clipped to the end
        ("bytes=10-19", ByteRange(10, 20)),
        ("bytes=90-", ByteRange(90, 100)),
        ("bytes=-10", ByteRange(90, 100)),
        ("bytes=-1000", ByteRange(0, 100)),
        ("BYTES = 5-6 ", ByteRange(5, 7)),
        ("bytes=5-6,", ByteRange(5, 7)),  # empty list elements do not count
        ("bytes=099-", ByteRange(99, 100)),
        # ignored: the whole body is sent
        ("bytes=abc", None),
        ("bytes=5-1", None),
        ("bytes=-", None),
        ("bytes=", None),
        ("bytes", None),
        ("items=0-1", None),
        ("bytes=0-1,3-4", None),  # several ranges may be answered whole
        ("bytes=1.5-2", None),
        ("bytes=+1-2", None),
        ("bytes=0-1-2", None),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(("header", "total"), [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100),
                                               ("bytes=0-", 0), ("bytes=-5", 0)])  # fmt: skip
def test_unsatisfiable_ranges(header: str, total: int) -> None:
    with pytest.raises(RangeNotSatisfiableError) as caught:
        parse_range(header, total)
    assert caught.value.total == total and caught.value.status == 416


@given(st.integers(0, 300), st.integers(0, 300), st.integers(0, 300))
def test_a_satisfiable_range_is_a_slice_of_the_body(first: int, last: int, total: int) -> None:
    body = bytes(range(256)) * 2
    body = body[:total]
    header = f"bytes={first}-{last}"
    if last < first:
        assert parse_range(header, total) is None
        return
    if first >= total:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, total)
        return
    span = parse_range(header, total)
    assert span is not None
    assert body[span.start : span.end] == body[first : last + 1]
    assert parse_content_range(span.content_range(total)) == (span, total)


def test_range_header_and_content_range() -> None:
    assert range_header(5) == "bytes=5-"
    assert range_header(5, 10) == "bytes=5-14"
    assert range_header(-5) == "bytes=-5"
    assert ByteRange(5, 15).content_range(20) == "bytes 5-14/20"
    assert parse_content_range("bytes 5-14/*") == (ByteRange(5, 15), None)
    for bad in (None, "", "bytes */20", "bytes 9-5/20", "items 0-1/2"):
        assert parse_content_range(bad) is None


@given(
    body=st.binary(max_size=60),
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    offset=st.integers(-70, 70),
    length=st.none() | st.integers(1, 70),
)
def test_slicing_a_chunked_body_is_slicing_the_body(
    body: bytes, sizes: list[int], offset: int, length: int | None
) -> None:
    chunks: list[bytes] = []
    at = 0
    while at < len(body):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(body[at : at + size])
        at += size
    if offset < 0:
        length = None
        expected = body[offset:]
    else:
        expected = body[offset:] if length is None else body[offset : offset + length]
    assert b"".join(slice_chunks(chunks, offset, length)) == expected

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def collect() -> bytes:
        return b"".join([c async for c in aslice_chunks(source(), offset, length)])

    assert asyncio.run(collect()) == expected


@given(st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40), st.integers(0, 10**12))
def test_any_range_header_gets_an_answer_never_a_crash(header: str, total: int) -> None:
    try:
        span = parse_range(header, total)
    except RangeNotSatisfiableError:
        return
    assert span is None or 0 <= span.start < span.end <= total
