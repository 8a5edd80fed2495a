"""Bounded streaming decoders for gzip, deflate and br bodies.

Bodies are stored exactly as uploaded. The decoders check an encoded upload (and bound how
far it inflates) and decompress on the way out for callers that do not accept the stored
encoding.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Protocol

import brotli

from kvbox.core.encoding import IDENTITY
from kvbox.core.errors import InvalidBodyEncodingError, RequestTooLargeError

# Output produced by one decoder step is capped so a tiny input can never allocate a huge buffer.
_STEP_OUTPUT = 256 * 1024


class Decoder(Protocol):
    def feed(self, data: bytes) -> Iterable[bytes]:
        """Decode one input chunk; yields output in bounded steps."""
        ...

    def finish(self) -> Iterable[bytes]:
        """Flush; raises `InvalidBodyEncodingError` if the stream is truncated."""
        ...


class _ZlibDecoder:
    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._raw_fallback = encoding == "deflate"
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._d = zlib.decompressobj(wbits)
        self._started = False
        # Input fed before zlib has seen its 2-byte header: replayed if we fall back to raw DEFLATE.
        self._head = b""

    def feed(self, data: bytes) -> Iterable[bytes]:
        buf = data
        while buf:
            try:
                out = self._d.decompress(buf, _STEP_OUTPUT)
            except zlib.error as err:
                if self._raw_fallback and not self._started:
                    # Some senders use raw DEFLATE for "deflate"; accept it as browsers do.
                    self._raw_fallback = False
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    buf, self._head = self._head + buf, b""
                    continue
                raise InvalidBodyEncodingError(f"The body is not valid {self._encoding} data ({err}).") from err
            if not self._started:
                self._head += buf[:2]
                self._started = len(self._head) >= 2
            if out:
                yield out
            if self._d.eof:
                rest = self._d.unused_data
                if not rest.strip(b"\x00"):
                    return  # nothing, or the zero padding some writers add
                if self._encoding != "gzip":
                    raise InvalidBodyEncodingError(f"Unexpected data after the end of the {self._encoding} stream.")
                # RFC 1952: a gzip file is a series of members; what follows one is the next.
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                buf = rest
                continue
            buf = self._d.unconsumed_tail

    def finish(self) -> Iterable[bytes]:
        try:
            out = self._d.flush()
        except zlib.error as err:
            raise InvalidBodyEncodingError(f"The body is not valid {self._encoding} data ({err}).") from err
        if out:
            yield out
        if not self._d.eof:
            raise InvalidBodyEncodingError(f"The {self._encoding} body is truncated.")


class _BrotliDecoder:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterable[bytes]:
        try:
            out = self._d.process(data, output_buffer_limit=_STEP_OUTPUT)
            # Drain until a step yields nothing: `can_accept_more_data()` reports True even while
            # output is still pending once all input is consumed, so it cannot end this loop.
            while out:
                yield out
                if self._d.is_finished():
                    break
                out = self._d.process(b"", output_buffer_limit=_STEP_OUTPUT)
        except brotli.error as err:
            raise InvalidBodyEncodingError(f"The body is not valid br data ({err}).") from err

    def finish(self) -> Iterable[bytes]:
        if not self._d.is_finished():
            raise InvalidBodyEncodingError("The br body is truncated.")
        return ()


class _IdentityDecoder:
    def feed(self, data: bytes) -> Iterable[bytes]:
        if data:
            yield data

    def finish(self) -> Iterable[bytes]:
        return ()


def decoder_for(encoding: str) -> Decoder:
    if encoding in ("gzip", "deflate"):
        return _ZlibDecoder(encoding)
    if encoding == "br":
        return _BrotliDecoder()
    return _IdentityDecoder()


class InflationGuard:
    """Runs a body through its decoder, discarding output, to prove it decodes and stays under a limit."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._decoder = decoder_for(encoding) if encoding != IDENTITY else None
        self._limit = limit
        self.decoded_size = 0

    def feed(self, data: bytes) -> None:
        if self._decoder is None:
            self.decoded_size += len(data)
            return
        for out in self._decoder.feed(data):
            self._count(len(out))

    def finish(self) -> None:
        if self._decoder is not None:
            for out in self._decoder.finish():
                self._count(len(out))

    def _count(self, n: int) -> None:
        self.decoded_size += n
        if self.decoded_size > self._limit:
            raise RequestTooLargeError(self._limit)


def decode_bytes(data: bytes, encoding: str, *, limit: int) -> bytes:
    """Decode a whole (small) body, bounded by `limit` decoded bytes."""
    if encoding == IDENTITY:
        return data
    decoder = decoder_for(encoding)
    out = bytearray()
    for chunk in decoder.feed(data):
        out += chunk
        if len(out) > limit:
            raise RequestTooLargeError(limit)
    for chunk in decoder.finish():
        out += chunk
        if len(out) > limit:
            raise RequestTooLargeError(limit)
    return bytes(out)


async def decode_stream(chunks: AsyncIterator[bytes], encoding: str) -> AsyncGenerator[bytes, None]:
    """Decompress a stored body while streaming it out."""
    decoder = decoder_for(encoding)
    async for chunk in chunks:
        for out in decoder.feed(chunk):
            yield out
    for out in decoder.finish():
        yield out
