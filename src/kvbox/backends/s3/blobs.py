"""Record bodies too large to keep inline, as objects in an S3-compatible bucket.

Every write goes to a fresh object name, so a reader that found a name in the index
never sees a torn or stale body, even on a store with weak consistency. Bodies stream
in as multipart uploads (at most two parts in memory) and out as one streaming GET,
resumed with a ranged GET pinned to the object's ETag if the connection drops.

The client is aiobotocore: it aborts a failed multipart upload and lists the uploads a
crashed writer left, which obstore (measured as the alternative) cannot; see
docs/deployment.md for the measurements.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import io
import itertools
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

from kvbox.backends.failures import s3_error_code, storage_failure
from kvbox.core.errors import StorageError
from kvbox.core.ids import new_blob_name

PART_SIZE = 5 << 20  # S3's smallest part (but the last); parts grow as an upload gets long
PARTS_PER_STEP = 1000  # every 1000 parts the part size grows by PART_SIZE: S3 allows 10,000
CHUNK_SIZE = 256 << 10  # per chunk handed to the HTTP response: small keeps a node lean
RESUME_ATTEMPTS = 3
# Attempts per S3 request (botocore's standard retry mode: throttling, 5xx, dropped connections).
MAX_ATTEMPTS = 5
# No upload may take longer, so an object whose multipart upload began before
# `older_than - MAX_UPLOAD_MS` was complete before `older_than`: S3 dates a multipart
# object by the start of its upload, and the orphan collector must not take a body
# that finished a moment ago.
MAX_UPLOAD_MS = 24 * 3600 * 1000
_BLOB_ID = re.compile(r"[0-9a-f]{32}")
log = logging.getLogger("kvbox.s3")


@functools.cache
def _session() -> Any:
    """One botocore session per process: it caches the parsed S3 service model, which costs
    some 80 ms to load for each new session. Credentials are still resolved per client."""
    from aiobotocore.session import get_session

    return get_session()


def parse_blob_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` -> (bucket, prefix ending in '/' or empty)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an S3 URL: {url!r} (use s3://BUCKET or s3://BUCKET/PREFIX)")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _check_id(blob_id: str) -> str:
    if _BLOB_ID.fullmatch(blob_id) is None:
        raise StorageError(f"Invalid blob id {blob_id!r}.")
    return blob_id


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _code(error: Exception) -> str:
    return s3_error_code(error)


class _Part(io.RawIOBase):
    """Buffered chunks sent as one part, read as a seekable file in small pieces with flow
    control. The chunks are never joined: given one large bytes object the client would also
    copy it whole, and allocations that size stay in the process's heap after they are freed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self._starts = list(itertools.accumulate((len(c) for c in chunks), initial=0))
        self.size = self._starts[-1]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self.size:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        offset = self._pos - self._starts[i]
        n = min(len(buffer), len(self._chunks[i]) - offset)
        buffer[:n] = memoryview(self._chunks[i])[offset : offset + n]
        self._pos += n
        return n


class S3BlobWriter:
    """One body being uploaded. Small bodies go up in one PUT at commit; larger ones as
    a multipart upload whose parts go up while the next part fills."""

    def __init__(self, store: S3BlobStore, blob_id: str) -> None:
        self._store = store
        self.blob_id = blob_id
        self._key = store.key_of(blob_id)
        self._chunks: list[bytes] = []  # not yet sent
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._pending: asyncio.Task[None] | None = None
        self._started_ms = int(time.time() * 1000)
        self._done = False

    def _take(self) -> _Part:
        """Everything buffered, as one part (which may run a chunk past the part size)."""
        part = _Part(self._chunks)
        self._chunks, self._buffered = [], 0
        return part

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("This blob was already committed or aborted.")
        self._chunks.append(bytes(data))
        self._buffered += len(data)
        try:
            if self._buffered >= self._store.part_size * (1 + len(self._parts) // PARTS_PER_STEP):
                await self._send_part(self._take())
        except BaseException as e:
            await self.abort()
            _reraise("write a blob", e)

    async def _send_part(self, part: _Part) -> None:
        s3 = await self._store.client()
        if self._upload_id is None:
            created = await s3.create_multipart_upload(Bucket=self._store.bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        if self._pending is not None:  # at most one part in flight while the next one fills
            pending, self._pending = self._pending, None
            await pending
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number})
        self._pending = asyncio.create_task(self._upload_part(s3, number, part))

    async def _upload_part(self, s3: Any, number: int, part: _Part) -> None:
        sent = await s3.upload_part(
            Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part
        )
        self._parts[number - 1]["ETag"] = sent["ETag"]

    async def commit(self) -> str:
        if self._done:
            raise StorageError("This blob was already committed or aborted.")
        try:
            s3 = await self._store.client()
            if self._upload_id is None:
                await s3.put_object(Bucket=self._store.bucket, Key=self._key, Body=self._take())
            else:
                if self._buffered:
                    await self._send_part(self._take())
                if self._pending is not None:
                    await self._pending
                if int(time.time() * 1000) - self._started_ms > MAX_UPLOAD_MS:
                    raise StorageError("The upload took longer than the orphan collector allows.")
                await s3.complete_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )  # fmt: skip
        except BaseException as e:
            await self.abort()
            _reraise("store a blob", e)
        self._done = True
        return self.blob_id

    async def abort(self) -> None:
        """Drop the body and any uploaded parts. Aborting twice, or after commit, does nothing."""
        if self._done:
            return
        self._done = True
        self._chunks, self._buffered = [], 0
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)
        if self._upload_id is not None:
            s3 = await self._store.client()
            try:
                await s3.abort_multipart_upload(Bucket=self._store.bucket, Key=self._key, UploadId=self._upload_id)
            except Exception as e:  # the caller is raising the failure that matters; the collector
                if _code(e) != "NoSuchUpload":  # aborts this upload once it is a day old
                    log.warning("could not abort the upload of blob %s: %s", self.blob_id, e)


def _range(start: int, end: int | None) -> str:
    """The HTTP Range of bytes `start` up to, not including, `end` (None: to the end)."""
    return f"bytes={start}-{end - 1}" if end is not None else f"bytes={start}-"


def _drop(response: Any) -> None:
    """Close a response whose bytes are not wanted (None stands for "nothing to send")."""
    if response is not None:
        response["Body"].close()


def _reraise(action: str, error: BaseException) -> NoReturn:
    """Raise `error` again, as a `StorageError` (cause chained) when it is a client failure."""
    if isinstance(error, Exception) and not isinstance(error, StorageError):
        raise storage_failure(f"Could not {action} in S3: {error}", error) from error
    raise error


class S3BlobStore:
    """`BlobStore` over one bucket and key prefix. Credentials and region come from the
    standard AWS settings (environment, config files, instance roles)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        part_size: int = PART_SIZE,
        chunk_size: int = CHUNK_SIZE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.max_attempts = max_attempts
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint or None
        self.part_size = max(part_size, 5 << 20)
        self.chunk_size = chunk_size
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._opening: asyncio.Lock | None = None
        # Upload id -> `older_than_ms` of the listing that first showed it in progress.
        self._uploads_seen: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str, *, endpoint: str | None = None, **options: int) -> S3BlobStore:
        """The store for `s3://BUCKET/PREFIX`; `options` are `part_size`, `chunk_size` and `max_attempts`."""
        bucket, prefix = parse_blob_url(url)
        return cls(bucket, prefix, endpoint=endpoint, **options)

    def key_of(self, blob_id: str) -> str:
        return self.prefix + _check_id(blob_id)

    async def client(self) -> Any:
        """The S3 client, created on first use inside the running event loop."""
        if self._client is not None:
            return self._client
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is None:
                from aiobotocore.config import AioConfig

                config = AioConfig(
                    retries={"max_attempts": self.max_attempts, "mode": "standard"},
                    max_pool_connections=64,
                    # Non-AWS stores are reached by path; the newer default checksums trip some of them.
                    s3={"addressing_style": "path"} if self.endpoint else {},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                stack = AsyncExitStack()
                creator = _session().create_client("s3", endpoint_url=self.endpoint, config=config)
                self._client = await stack.enter_async_context(creator)
                self._stack = stack
        return self._client

    async def create(self) -> S3BlobWriter:
        return S3BlobWriter(self, new_blob_name())

    async def open(self, blob_id: str, *, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """Start the GET now (so `StorageError` for a missing body comes from here) and return
        the body, or bytes `start` to `end` of it (a ranged GET), as chunks of at most `chunk_size`."""
        key = self.key_of(blob_id)
        if start or end is not None:
            # An empty range, or one past the end, still asks for a byte: the store says
            # whether the object exists, and an InvalidRange answer means nothing to send.
            ranged = _range(start, end) if end is None or end > start else _range(start, start + 1)
            response = await self._get(key, blob_id, Range=ranged)
            if end is not None and end <= start:
                _drop(response)
                response = None
        else:
            response = await self._get(key, blob_id)
        return self._chunks(key, blob_id, response, start, end)

    async def _get(self, key: str, blob_id: str, **extra: str) -> Any:
        s3 = await self.client()
        try:
            return await s3.get_object(Bucket=self.bucket, Key=key, **extra)
        except Exception as e:
            if _code(e) in ("NoSuchKey", "404", "PreconditionFailed", "412"):
                raise StorageError(f"Blob {blob_id} is missing.") from e
            if "Range" in extra and _code(e) in ("InvalidRange", "416"):
                return None  # the range begins at or past the end: nothing to send
            raise storage_failure(f"Blob {blob_id} could not be read from S3: {e}", e) from e

    async def _chunks(
        self, key: str, blob_id: str, response: Any, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        from botocore.exceptions import BotoCoreError

        if response is None:
            return
        size, etag = int(response["ContentLength"]), response["ETag"]
        sent = 0
        failures = 0
        try:
            while True:
                try:
                    async for chunk in response["Body"].iter_chunks(self.chunk_size):
                        sent += len(chunk)
                        yield chunk
                    if sent >= size:
                        return
                    raise StorageError(f"Blob {blob_id} ended after {sent} of {size} bytes.")
                except (TimeoutError, BotoCoreError, OSError) as e:
                    failures += 1
                    if failures > RESUME_ATTEMPTS:
                        raise storage_failure(f"Blob {blob_id} could not be read from S3: {e}", e) from e
                response["Body"].close()
                # Resume where the stream broke, from the very same object version.
                response = await self._get(key, blob_id, Range=_range(start + sent, end), IfMatch=etag)
                if response is None:
                    raise StorageError(f"Blob {blob_id} ended after {sent} of {size} bytes.")
        finally:
            if response is not None:
                response["Body"].close()

    async def delete(self, blob_id: str) -> None:
        """Remove a blob; a missing one is a no-op."""
        key = self.key_of(blob_id)
        s3 = await self.client()
        try:
            await s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            raise storage_failure(f"Blob {blob_id} could not be deleted from S3: {e}", e) from e

    async def list_ids(self, *, older_than_ms: int) -> AsyncIterator[str]:
        """Ids of committed blobs stored before `older_than_ms`, for orphan collection.

        Also aborts multipart uploads of writers that died before commit or abort: those
        begun before `older_than_ms - MAX_UPLOAD_MS`, by S3's date and by this store's own
        sightings alike. An upload is aborted only once the listings of this store have shown
        it in progress for that long, so an S3 server that misdates its uploads (moto dates
        every one in 2010) never loses one in flight.
        """
        s3 = await self.client()
        cutoff = older_than_ms - MAX_UPLOAD_MS
        try:
            seen: dict[str, int] = {}
            uploads = s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
            async for page in uploads:
                for upload in page.get("Uploads", []):
                    upload_id = upload["UploadId"]
                    first_seen = self._uploads_seen.get(upload_id, older_than_ms)
                    if _ms(upload["Initiated"]) < cutoff and first_seen <= cutoff:
                        await s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload_id)
                    else:
                        seen[upload_id] = first_seen
            self._uploads_seen = seen  # uploads no longer listed are forgotten
            objects = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            async for page in objects:
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix) :]
                    cutoff = older_than_ms - (MAX_UPLOAD_MS if "-" in item.get("ETag", "") else 0)
                    if _BLOB_ID.fullmatch(name) and _ms(item["LastModified"]) < cutoff:
                        yield name
        except StorageError:
            raise
        except Exception as e:
            raise storage_failure(f"Could not list blobs in S3: {e}", e) from e

    async def ping(self) -> None:
        """The bucket answers (HEAD bucket)."""
        s3 = await self.client()
        try:
            await s3.head_bucket(Bucket=self.bucket)
        except Exception as e:
            raise StorageError(f"The bucket {self.bucket} does not answer: {e}") from e

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
