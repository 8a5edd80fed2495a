"""Record use cases: streaming put, get, head, delete and key listing."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from kvbox.backends.base import BlobStore, BlobWriter, MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.content import BINARY_TYPE
from kvbox.core.encoding import normalize_encoding
from kvbox.core.errors import (
    InvalidContentTypeError,
    InvalidParameterError,
    KvboxError,
    RecordNotFoundError,
    RequestTooLargeError,
    StorageError,
    StoreNotFoundError,
)
from kvbox.core.expiry import expires_at, is_gone
from kvbox.core.keys import validate_key
from kvbox.core.models import KeyPage, Permission, RecordMeta, Store, Visibility
from kvbox.service.codecs import InflationGuard, decode_bytes
from kvbox.service.principal import Principal
from kvbox.service.readcache import ReadCache
from kvbox.service.schemas import (
    check_content_type,
    check_json_body,
    collections_for_key,
    find_collection,
    needs_body_check,
)
from kvbox.service.stats import StatsBuffer
from kvbox.service.stores import MAX_PAGE, Resolved, StoreService

MAX_CONTENT_TYPE_LENGTH = 1024
OPEN_ATTEMPTS = 5
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(slots=True)
class RecordRead:
    """A record ready to send: its row, when it expires (its own expiry or its store's rule),
    and (for GET) its stored bytes as a stream."""

    resolved: Resolved
    meta: RecordMeta
    body: AsyncGenerator[bytes, None] | None = None
    expires_at: int | None = None


class RecordService:
    def __init__(
        self,
        index: MetadataIndex,
        blobs: BlobStore,
        stores: StoreService,
        stats: StatsBuffer,
        clock: Clock,
        *,
        max_record_size: int,
        inline_threshold: int,
        cache: ReadCache | None = None,
    ) -> None:
        self._cache = cache or ReadCache(index)
        self._index = index
        self._blobs = blobs
        self._stores = stores
        self._stats = stats
        self._clock = clock
        self.max_record_size = max_record_size
        self._inline_threshold = inline_threshold

    async def put(
        self,
        principal: Principal,
        segment: str,
        key: str,
        *,
        body: AsyncIterator[bytes],
        content_type: str | None,
        content_encoding: str | None,
        content_length: int | None,
        expires_at: int | None = None,
    ) -> tuple[Resolved, RecordMeta]:
        """Store a body exactly as sent, with its own expiry (`expires_at`, ms) or none.
        Checked before any byte is read: key, encoding, declared length, permission and
        collection content type."""
        validate_key(key)
        encoding = normalize_encoding(content_encoding)
        ctype = _clean_content_type(content_type)
        if content_length is not None and content_length > self.max_record_size:
            raise RequestTooLargeError(self.max_record_size, content_length)
        resolved = await self._stores.resolve(principal, segment, need=Permission.WRITE, record_op=True)
        collections = collections_for_key(resolved.store.schema, key)
        check_content_type(collections, key, ctype)
        keep_for_check = needs_body_check(collections, ctype)

        guard = InflationGuard(encoding, self.max_record_size)
        buffer = bytearray()
        writer: BlobWriter | None = None
        size = 0
        try:
            async for chunk in body:
                if not chunk:
                    continue
                size += len(chunk)
                if size > self.max_record_size:
                    raise RequestTooLargeError(self.max_record_size)
                guard.feed(chunk)
                if writer is None:
                    buffer += chunk
                    if len(buffer) > self._inline_threshold and not keep_for_check:
                        writer = await self._blobs.create()
                        await writer.write(bytes(buffer))
                        buffer = bytearray()
                else:
                    await writer.write(chunk)
            guard.finish()
            if keep_for_check:
                check_json_body(
                    collections, key, ctype, decode_bytes(bytes(buffer), encoding, limit=self.max_record_size)
                )
                if len(buffer) > self._inline_threshold:
                    writer = await self._blobs.create()
                    await writer.write(bytes(buffer))
                    buffer = bytearray()
            blob_id = await writer.commit() if writer is not None else None
        except BaseException:
            if writer is not None:
                await writer.abort()
            raise
        now = self._clock.now_ms()
        meta = RecordMeta(
            key=key,
            content_type=ctype,
            encoding=encoding,
            size=size,
            etag=secrets.token_hex(12),
            modified_at=now,
            inline=bytes(buffer) if blob_id is None else None,
            blob_id=blob_id,
            expires_at=expires_at,
        )
        try:
            replaced = await self._index.put_record(resolved.store.id, meta)
        except KvboxError:
            if blob_id is not None:
                await self._blobs.delete(blob_id)
            if await self._index.get_store(resolved.store.id) is None:
                raise StoreNotFoundError() from None
            raise
        if replaced is not None and replaced.blob_id:
            await self._blobs.delete(replaced.blob_id)
        return resolved, meta

    async def _read_meta(
        self, principal: Principal, segment: str, key: str, signature: str | None
    ) -> tuple[Resolved, RecordMeta]:
        validate_key(key)
        resolved = await self._stores.resolve(
            principal, segment, need=Permission.READ, signature=signature, record_key=key, record_op=True
        )
        store_id = resolved.store.id
        # Cached rows too: expiry depends on the clock, not on the index changing.
        meta = self._live(
            resolved.store,
            await self._cache.get_record(
                ("record", store_id, key), lambda: self._index.get_record(store_id, key), _inline_size
            ),
        )
        if meta is None:
            raise RecordNotFoundError()
        return resolved, meta

    def _live(self, store: Store, meta: RecordMeta | None) -> RecordMeta | None:
        """The row, or None when there is none or it has expired."""
        if meta is None or (
            meta.expires_at is None and not store.record_expiry.rules and not store.record_expiry.retired
        ):
            return meta
        gone = is_gone(store.record_expiry, meta.key, meta.modified_at, meta.expires_at, self._clock.now_ms())
        return None if gone else meta

    def _visibility(self, store: Store) -> Visibility:
        return Visibility(self._clock.now_ms(), store.record_expiry)

    async def get(self, principal: Principal, segment: str, key: str, *, signature: str | None = None) -> RecordRead:
        resolved, meta = await self._read_meta(principal, segment, key, signature)
        self._stats.read(resolved.store.id, self._clock.now_ms())
        found, body = await self._open(resolved.store, meta)
        if found is None:
            raise RecordNotFoundError()
        return RecordRead(resolved, found, body, _expiry(resolved.store, found))

    async def _open(
        self, store: Store, meta: RecordMeta | None
    ) -> tuple[RecordMeta | None, AsyncGenerator[bytes, None]]:
        """Open a record's body. A concurrent write may replace (and delete) the blob between
        reading the row and opening it: then read the row again and open the newer body."""
        for _ in range(OPEN_ATTEMPTS):
            if meta is None:
                return None, _one(None)
            if meta.blob_id is None:
                return meta, _one(meta.inline)
            try:
                return meta, await self._blobs.open(meta.blob_id)
            except StorageError:
                fresh = await self._index.get_record(store.id, meta.key)
                if fresh is not None and fresh.blob_id == meta.blob_id:
                    raise  # the row still points at it: the blob is really lost
                meta = self._live(store, fresh)
        raise StorageError(f"Record {meta.key if meta else ''!r} kept changing while it was being opened.")

    async def head(self, principal: Principal, segment: str, key: str, *, signature: str | None = None) -> RecordRead:
        resolved, meta = await self._read_meta(principal, segment, key, signature)
        self._stats.touched(resolved.store.id, self._clock.now_ms())
        return RecordRead(resolved, meta, None, _expiry(resolved.store, meta))

    async def delete(self, principal: Principal, segment: str, key: str) -> None:
        """Deleting a missing record succeeds (idempotent, so `set_value(key, None)` never fails)."""
        validate_key(key)
        resolved = await self._stores.resolve(principal, segment, need=Permission.WRITE, record_op=True)
        old = await self._index.delete_record(resolved.store.id, key, now_ms=self._clock.now_ms())
        if old is not None and old.blob_id:
            await self._blobs.delete(old.blob_id)

    async def delete_prefix(self, principal: Principal, segment: str, prefix: str) -> int:
        """Delete every record under `prefix` ("" for all) as one operation: the records visible
        now are gone when it returns (and counted), later writes stay. Their rows and blobs
        are reclaimed in the background."""
        resolved = await self._stores.resolve(principal, segment, need=Permission.WRITE)
        count = await self._index.delete_prefix(resolved.store.id, prefix, visible=self._visibility(resolved.store))
        if count is None:
            raise StoreNotFoundError()
        return count

    async def list_keys(
        self,
        principal: Principal,
        segment: str,
        *,
        exclusive_start_key: str | None = None,
        limit: int = MAX_PAGE,
        prefix: str | None = None,
        collection: str | None = None,
        signature: str | None = None,
    ) -> tuple[Resolved, KeyPage]:
        resolved = await self._stores.resolve(principal, segment, need=Permission.READ, signature=signature)
        self._stats.listed(resolved.store.id, self._clock.now_ms())
        page = await self._page(resolved.store, exclusive_start_key, limit, prefix, collection)
        return resolved, page

    async def _page(
        self, store: Store, after: str | None, limit: int, prefix: str | None, collection: str | None
    ) -> KeyPage:
        if limit < 1:
            raise InvalidParameterError("Parameter 'limit' must be at least 1.")
        exact: str | None = None
        if collection is not None:
            c = find_collection(store.schema, collection)
            if c.key is not None:
                exact = c.key
            else:
                coll_prefix = c.key_prefix or ""
                if prefix is None or coll_prefix.startswith(prefix):
                    prefix = coll_prefix
                elif not prefix.startswith(coll_prefix):
                    return KeyPage(items=[], is_truncated=False)
        visible = self._visibility(store)
        if exact is not None:
            if (prefix and not exact.startswith(prefix)) or (after is not None and exact <= after):
                return KeyPage(items=[], is_truncated=False)
            page = await self._index.list_keys(store.id, after=None, prefix=exact, limit=1, visible=visible)
            return KeyPage(items=[i for i in page.items if i.key == exact], is_truncated=False)
        return await self._index.list_keys(store.id, after=after, prefix=prefix or None, limit=limit, visible=visible)

    async def iterate_for_export(
        self, store: Store, *, prefix: str | None, collection: str | None
    ) -> AsyncIterator[tuple[RecordMeta, AsyncIterator[bytes]]]:
        """Every matching record with its stored bytes, in key order (for the ZIP download)."""
        after: str | None = None
        while True:
            page = await self._page(store, after, MAX_PAGE, prefix, collection)
            for item in page.items:
                row = self._live(store, await self._index.get_record(store.id, item.key))
                found, body = await self._open(store, row)
                if found is None:
                    continue  # deleted or expired while exporting
                yield found, body
            if not page.is_truncated:
                return
            after = page.next_key


def _expiry(store: Store, meta: RecordMeta) -> int | None:
    if meta.expires_at is None and not store.record_expiry.rules:
        return None
    return expires_at(store.record_expiry, meta.key, meta.modified_at, meta.expires_at)


def _inline_size(meta: RecordMeta | None) -> int:
    return len(meta.inline) if meta is not None and meta.inline is not None else 0


def _clean_content_type(value: str | None) -> str:
    if value is None or not value.strip():
        return BINARY_TYPE
    value = value.strip()
    if len(value) > MAX_CONTENT_TYPE_LENGTH or _CONTROL_CHARS.search(value):
        raise InvalidContentTypeError()
    return value


async def _one(data: bytes | None) -> AsyncGenerator[bytes, None]:
    if data:
        yield data
