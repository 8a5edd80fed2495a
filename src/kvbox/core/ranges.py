"""Byte ranges (RFC 9110 section 14): what a `Range` header selects, the header values that
describe a partial body, and the same slice taken from a body that arrives in chunks (for
a server that sent the whole body). Pure.

kvbox serves one range per request. A header it cannot read (another unit, bad syntax,
`bytes=5-1`) is ignored, as RFC 9110 prescribes, and the whole record is sent; so is a
header with several ranges, which the RFC allows. A range that starts past the end is
unsatisfiable (416).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from kvbox.core.errors import RangeNotSatisfiableError
from kvbox.core.frozen import fast_init

_SPEC = re.compile(r"(\d*)-(\d*)")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@fast_init
@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` up to, not including, `end` (Python's slice convention; HTTP's last-byte
    positions are inclusive, `content_range` converts)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, total: int) -> str:
        """The `Content-Range` value of a 206 carrying these bytes of `total`."""
        return f"bytes {self.start}-{self.end - 1}/{total}"


def parse_range(header: str | None, total: int) -> ByteRange | None:
    """The range a `Range` header selects from a body of `total` bytes, clipped to its end;
    None to send the whole body (no header, or one that is ignored, see the module doc).

    Raises `RangeNotSatisfiableError` when the one range selects no byte: its first byte is
    at or past the end, or it is a suffix of zero bytes (also: any range of an empty body).
    """
    if header is None:
        return None
    unit, sep, ranges = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in ranges.split(",") if s.strip()]
    if len(specs) != 1:
        return None
    found = _SPEC.fullmatch(specs[0])
    if found is None or found.group(0) == "-":
        return None
    first, last = found.groups()
    if not first:  # bytes=-N: the last N bytes
        suffix = int(last)
        if suffix == 0 or total == 0:
            raise RangeNotSatisfiableError(total)
        return ByteRange(max(total - suffix, 0), total)
    start = int(first)
    if last and int(last) < start:
        return None  # bytes=5-1 is invalid syntax, not an unsatisfiable range
    if start >= total:
        raise RangeNotSatisfiableError(total)
    return ByteRange(start, min(int(last) + 1, total) if last else total)


def range_header(offset: int, length: int | None = None) -> str:
    """The `Range` value asking for `length` bytes from `offset` (to the end when None); a
    negative `offset` asks for the last `-offset` bytes."""
    if offset < 0:
        return f"bytes={offset}"
    return f"bytes={offset}-{offset + length - 1}" if length is not None else f"bytes={offset}-"


def parse_content_range(value: str | None) -> tuple[ByteRange, int | None] | None:
    """The range and total length (None for `*`) a 206's `Content-Range` announces; None when
    it is missing or not one byte range."""
    found = _CONTENT_RANGE.fullmatch((value or "").strip())
    if found is None:
        return None
    first, last, total = found.groups()
    if int(last) < int(first):
        return None
    return ByteRange(int(first), int(last) + 1), None if total == "*" else int(total)


def _cut(chunk: bytes, skip: int, length: int | None) -> tuple[bytes, int, int | None]:
    """What of `chunk` lies in the window after dropping `skip` bytes and keeping `length`:
    the part to give, and what is left to skip and to keep."""
    dropped = min(skip, len(chunk))
    part = chunk[dropped:]
    if length is not None:
        part = part[:length]
        length -= len(part)
    return part, skip - dropped, length


def _tail(buffer: bytearray, chunk: bytes, size: int) -> None:
    buffer += chunk
    del buffer[: max(len(buffer) - size, 0)]


def slice_chunks(chunks: Iterable[bytes], offset: int, length: int | None = None) -> Iterator[bytes]:
    """Bytes `offset` to `offset + length` (None: to the end) of a body that arrives in chunks,
    as `body[offset:offset + length]` would give them; a negative `offset` gives the last
    `-offset` bytes (held back, at most that many, until the body ends)."""
    if offset < 0:
        buffer = bytearray()
        for chunk in chunks:
            _tail(buffer, chunk, -offset)
        if buffer:
            yield bytes(buffer)
        return
    for chunk in chunks:
        part, offset, length = _cut(chunk, offset, length)
        if part:
            yield part
        if length == 0:
            return


async def aslice_chunks(chunks: AsyncIterable[bytes], offset: int, length: int | None = None) -> AsyncIterator[bytes]:
    """`slice_chunks` of a body that arrives asynchronously."""
    if offset < 0:
        buffer = bytearray()
        async for chunk in chunks:
            _tail(buffer, chunk, -offset)
        if buffer:
            yield bytes(buffer)
        return
    async for chunk in chunks:
        part, offset, length = _cut(chunk, offset, length)
        if part:
            yield part
        if length == 0:
            return
