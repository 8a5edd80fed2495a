"""Request bodies for record uploads: value encoding and streaming sources.

A value is encoded once by the core codec and compressed by the rules of `_compression`.
Paths, binary files and iterators of bytes are streamed in chunks, so memory stays bounded
whatever the record's size; they are compressed on the fly when compression applies.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from kvbox.client._compression import (
    COMPRESS_THRESHOLD,
    Compression,
    acompress_chunks,
    compress,
    compress_chunks,
    encoding_name,
    is_compressible,
)
from kvbox.core.content import BINARY_TYPE, encode_value

CHUNK_SIZE = 64 * 1024


@dataclass(slots=True)
class Body:
    """A prepared request body. `content()` gives fresh content for each attempt.

    Only replayable bodies (in-memory bytes, paths, seekable files) are retried.
    """

    headers: dict[str, str]
    content: Callable[[], Any]
    replayable: bool


def is_stream_source(value: Any) -> bool:
    """Paths, binary files and byte iterators are streamed; everything else is a value."""
    return isinstance(value, os.PathLike) or hasattr(value, "read") or isinstance(value, Iterator | AsyncIterator)


def file_size(value: Any) -> int | None:
    """Bytes left to read from a path or a seekable file, or None when unknown."""
    if isinstance(value, os.PathLike):
        return os.stat(value).st_size
    try:
        return int(os.fstat(value.fileno()).st_size - value.tell())
    except (AttributeError, OSError, ValueError):
        return None


def read_chunks(value: os.PathLike[str] | BinaryIO, start: int | None) -> Iterator[bytes]:
    """Read a path or a file in chunks; a seekable file is rewound to `start` first."""
    if isinstance(value, os.PathLike):
        with open(value, "rb") as f:
            yield from iter(lambda: f.read(CHUNK_SIZE), b"")
        return
    if start is not None:
        value.seek(start)
    yield from iter(lambda: value.read(CHUNK_SIZE), b"")


def start_position(value: Any) -> int | None:
    """Where a seekable file starts, so a retry can rewind to it; None if it cannot seek."""
    if isinstance(value, os.PathLike):
        return 0
    try:
        return int(value.tell()) if value.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def encode_body(
    value: Any, content_type: str | None, content_encoding: str | None, compression: Compression | None
) -> Body:
    """An in-memory value: encode it (core codec), then compress when the rules say so."""
    if content_encoding is not None and not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError("content_encoding may only be given with a bytes value that is already encoded")
    data, ctype = encode_value(value, content_type)
    headers = {"content-type": ctype}
    if content_encoding is not None:
        headers["content-encoding"] = content_encoding
    elif compression is not None and len(data) >= COMPRESS_THRESHOLD and is_compressible(ctype):
        data = compress(data, compression)
        headers["content-encoding"] = encoding_name(compression)
    return Body(headers=headers, content=lambda: data, replayable=True)


def stream_headers(
    content_type: str | None, content_encoding: str | None, compression: Compression | None, size: int | None
) -> tuple[dict[str, str], Compression | None]:
    """Headers for a streamed body, and the compression to apply while streaming (if any)."""
    ctype = content_type or BINARY_TYPE
    headers = {"content-type": ctype}
    if content_encoding is not None:
        headers["content-encoding"] = content_encoding
        compression = None
    elif compression is None or not is_compressible(ctype) or (size is not None and size < COMPRESS_THRESHOLD):
        compression = None
    else:
        headers["content-encoding"] = encoding_name(compression)
    if compression is None and size is not None:
        headers["content-length"] = str(size)
    return headers, compression


def _peek(chunks: Iterator[bytes]) -> tuple[list[bytes], bool]:
    """Read ahead to the compression threshold: the chunks read, and whether the source ended."""
    head: list[bytes] = []
    total = 0
    for chunk in chunks:
        head.append(bytes(chunk))
        total += len(chunk)
        if total >= COMPRESS_THRESHOLD:
            return head, False
    return head, True


async def _apeek(chunks: AsyncIterator[bytes]) -> tuple[list[bytes], bool]:
    head: list[bytes] = []
    total = 0
    async for chunk in chunks:
        head.append(bytes(chunk))
        total += len(chunk)
        if total >= COMPRESS_THRESHOLD:
            return head, False
    return head, True


def prepare_body(
    value: Any, content_type: str | None, content_encoding: str | None, compression: Compression | None
) -> Body:
    """The body for a synchronous upload."""
    if not is_stream_source(value):
        return encode_body(value, content_type, content_encoding, compression)
    if isinstance(value, AsyncIterator):
        raise TypeError("an async iterator can only be uploaded with KvboxClientAsync")
    # A binary file is an Iterator too (of lines): read it as a file, in chunks.
    if isinstance(value, Iterator) and not hasattr(value, "read"):
        head, ended = _peek(value)
        size = sum(map(len, head)) if ended else None
        headers, comp = stream_headers(content_type, content_encoding, compression, size)

        def from_iterator() -> Iterator[bytes]:
            chunks: Iterator[bytes] = iter([*head, *value]) if ended else _chain(head, value)
            return compress_chunks(chunks, comp) if comp else chunks

        return Body(headers=headers, content=from_iterator, replayable=False)
    start = start_position(value)
    headers, comp = stream_headers(content_type, content_encoding, compression, file_size(value))

    def from_file() -> Iterator[bytes]:
        chunks = read_chunks(value, start)
        return compress_chunks(chunks, comp) if comp else chunks

    return Body(headers=headers, content=from_file, replayable=start is not None)


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest


async def _aread_chunks(value: Any, start: int | None) -> AsyncIterator[bytes]:
    # File reads go to a worker thread so a slow disk never stalls the event loop.
    import anyio.to_thread

    if isinstance(value, os.PathLike):
        f = await anyio.to_thread.run_sync(open, value, "rb")
        try:
            while chunk := await anyio.to_thread.run_sync(f.read, CHUNK_SIZE):
                yield chunk
        finally:
            f.close()
        return
    if start is not None:
        await anyio.to_thread.run_sync(value.seek, start)
    while chunk := await anyio.to_thread.run_sync(value.read, CHUNK_SIZE):
        yield chunk


async def _achain(head: list[bytes], rest: AsyncIterator[bytes] | Iterator[bytes] | None) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    if isinstance(rest, AsyncIterator):
        async for chunk in rest:
            yield chunk
    elif rest is not None:
        for chunk in rest:
            yield chunk


async def aprepare_body(
    value: Any, content_type: str | None, content_encoding: str | None, compression: Compression | None
) -> Body:
    """The body for an asynchronous upload (also accepts async iterators of bytes)."""
    if not is_stream_source(value):
        return encode_body(value, content_type, content_encoding, compression)
    if isinstance(value, AsyncIterator) or (isinstance(value, Iterator) and not hasattr(value, "read")):
        head, ended = await _apeek(value) if isinstance(value, AsyncIterator) else _peek(value)
        size = sum(map(len, head)) if ended else None
        headers, comp = stream_headers(content_type, content_encoding, compression, size)

        def from_iterator() -> AsyncIterator[bytes]:
            chunks = _achain(head, None if ended else value)
            return acompress_chunks(chunks, comp) if comp else chunks

        return Body(headers=headers, content=from_iterator, replayable=False)
    start = start_position(value)
    headers, comp = stream_headers(content_type, content_encoding, compression, file_size(value))

    def from_file() -> AsyncIterator[bytes]:
        chunks = _aread_chunks(value, start)
        return acompress_chunks(chunks, comp) if comp else chunks

    return Body(headers=headers, content=from_file, replayable=start is not None)
