"""Request-body compression: which content types compress, and gzip/brotli compressors.

Bodies of 1 KiB or more with a compressible content type are compressed, as the official
Apify clients do: gzip by default, brotli on request.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Literal, Protocol

import brotli

from kvbox.core.content import media_type

Compression = Literal["gzip", "brotli"]
COMPRESS_THRESHOLD = 1024
GZIP_LEVEL = 6  # level 9 costs several times the CPU for a few percent on typical JSON
BROTLI_QUALITY = 5  # brotli's default 11 runs at a few MB/s; 5 is near gzip's speed and smaller

# Already-compressed media gain nothing; the raw formats in each family still compress well.
_INCOMPRESSIBLE_FAMILIES = ("image/", "audio/", "video/", "font/")
_COMPRESSIBLE_EXCEPTIONS = {"image/bmp", "image/svg+xml", "image/x-icon", "audio/wav", "audio/x-wav", "font/ttf"}
_ARCHIVES = {
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/zstd",
    "application/x-brotli",
    "application/x-compress",
    "application/x-lzip",
}


def is_compressible(content_type: str | None) -> bool:
    mt = media_type(content_type)
    if mt.endswith(("+json", "+xml")) or mt in _COMPRESSIBLE_EXCEPTIONS:
        return True
    return not (mt.startswith(_INCOMPRESSIBLE_FAMILIES) or mt in _ARCHIVES)


def encoding_name(compression: Compression) -> str:
    return "br" if compression == "brotli" else "gzip"


class _Compressor(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def end(self) -> bytes: ...


class _Gzip:
    def __init__(self) -> None:
        self._c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def end(self) -> bytes:
        return self._c.flush()


class _Brotli:
    def __init__(self) -> None:
        self._c = brotli.Compressor(quality=BROTLI_QUALITY)

    def feed(self, data: bytes) -> bytes:
        return bytes(self._c.process(data))

    def end(self) -> bytes:
        return bytes(self._c.finish())


def compressor(compression: Compression) -> _Compressor:
    return _Brotli() if compression == "brotli" else _Gzip()


def compress(data: bytes, compression: Compression) -> bytes:
    c = compressor(compression)
    return c.feed(data) + c.end()


def compress_chunks(chunks: Iterable[bytes], compression: Compression) -> Iterator[bytes]:
    c = compressor(compression)
    for chunk in chunks:
        out = c.feed(chunk)
        if out:
            yield out
    yield c.end()


async def acompress_chunks(chunks: AsyncIterable[bytes], compression: Compression) -> AsyncIterator[bytes]:
    c = compressor(compression)
    async for chunk in chunks:
        out = c.feed(chunk)
        if out:
            yield out
    yield c.end()
