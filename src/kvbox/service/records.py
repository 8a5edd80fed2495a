"""Record use cases: streaming put, get, head, delete and key listing; conditional writes and
reads, and reads of a byte range."""

from __future__ import annotations

import os
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Final

from kvbox.backends.base import BasisChangedError, BlobStore, BlobWriter, MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.conditions import ReadConditions, if_range_holds
from kvbox.core.content import BINARY_TYPE
from kvbox.core.encoding import IDENTITY, accepts, normalize_encoding
from kvbox.core.errors import (
    InvalidContentTypeError,
    InvalidParameterError,
    KvboxError,
    PreconditionFailedError,
    RecordNotFoundError,
    RequestTooLargeError,
    StorageError,
    StoreNotFoundError,
    TokenNotProvidedError,
)
from kvbox.core.expiry import expires_at, is_gone, stale_before
from kvbox.core.frozen import fast_init
from kvbox.core.keys import validate_key
from kvbox.core.models import Condition, KeyPage, Permission, RecordMeta, Store, StoreLookup, Visibility, WriteBasis
from kvbox.core.ranges import ByteRange, parse_range
from kvbox.service.changes import ChangeHub
from kvbox.service.codecs import InflationGuard, decode_bytes
from kvbox.service.principal import Authenticator, Principal
from kvbox.service.readcache import ReadCache
from kvbox.service.schemas import (
    check_charset,
    check_content_type,
    check_json_body,
    collections_for_key,
    find_collection,
    needs_body_check,
)
from kvbox.service.stats import StatsBuffer
from kvbox.service.stores import MAX_PAGE, Resolved, StoreService, parse_ref

ANY_RECORD: Final = Condition()  # a condition that holds for any record
MAX_CONTENT_TYPE_LENGTH = 1024
OPEN_ATTEMPTS = 5
WRITE_ATTEMPTS = 3
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@fast_init
@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How a caller reads a record beyond naming it: the preconditions of its GET or HEAD, the
    `Range` it asks for (with its `If-Range`), and the content encodings it takes as they are
    stored (`Accept-Encoding`; None: identity only, so a compressed record is decoded for it)."""

    conditions: ReadConditions | None = None
    range: str | None = None
    if_range: str | None = None
    accept_encoding: str | None = None


PLAIN_READ: Final = ReadOptions()


@dataclass(slots=True)
class RecordRead:
    """A record ready to send: its row, when it expires (its own expiry or its store's rule),
    and (for GET) its stored bytes as a stream.

    `decode`: the record is stored compressed in an encoding the caller does not take, so it
    is sent decoded (and a range is not honoured). `span`: the part of the stored bytes the
    body holds (None: all of them). `not_modified`: a precondition says 304; there is no body.
    """

    resolved: Resolved
    meta: RecordMeta
    body: AsyncGenerator[bytes, None] | None = None
    span: ByteRange | None = None
    decode: bool = False
    not_modified: bool = False
    expires_at: int | None = None


def _plan(resolved: Resolved, meta: RecordMeta, options: ReadOptions, *, ranged: bool) -> RecordRead:
    """How to answer a read of `meta`: 304, a span of it or all of it (RFC 9110's order:
    preconditions, then the range). Raises 412 or 416."""
    decode = meta.encoding != IDENTITY and not accepts(options.accept_encoding, meta.encoding)
    read = RecordRead(resolved, meta, None, None, decode, False, _expiry(resolved.store, meta))
    conditions = options.conditions
    if conditions is not None and conditions.not_modified(meta.etag, meta.modified_at):
        read.not_modified = True
    elif ranged and options.range is not None and not decode and if_range_holds(options.if_range, meta.etag):
        read.span = parse_range(options.range, meta.size)
    return read


# The generator ETags come from: the process's own, so nobody seeding `random` can repeat them,
# seeded from the system, again in every forked child.
_etag_bits = random.Random()
os.register_at_fork(after_in_child=_etag_bits.seed)


def new_etag() -> str:
    """A record version's ETag: 96 random bits as hex. Unique is all an ETag must be, and a
    system call per write would cost more than everything else about the choice."""
    return f"{_etag_bits.getrandbits(96):024x}"


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
        hub: ChangeHub | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        self._cache = cache or ReadCache(index)
        self._hub = hub
        self._auth = auth or Authenticator(index)
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
        condition: Condition | None = None,
        expires_at: int | None = None,
    ) -> tuple[Resolved, RecordMeta]:
        """Store a body exactly as sent, with its own expiry (`expires_at`, ms) or none, if
        `condition` holds for the record it replaces (else `PreconditionFailedError`, nothing
        changed). Checked before any byte is read: key, encoding, declared length, permission
        and collection content type."""
        validate_key(key)
        encoding = normalize_encoding(content_encoding)
        ctype = _clean_content_type(content_type)
        if content_length is not None and content_length > self.max_record_size:
            raise RequestTooLargeError(self.max_record_size, content_length)
        basis: WriteBasis | None = None
        if self._index.shared_by_nodes:  # decided on rows the write confirms (one round trip)
            resolved, basis = await self._stores.writable(principal, segment)
        else:
            resolved = await self._stores.resolve(principal, segment, need=Permission.WRITE, record_op=True)
        collections = collections_for_key(resolved.store.schema, key)
        check_content_type(collections, key, ctype)
        keep_for_check = needs_body_check(collections, ctype)
        if keep_for_check:
            check_charset(ctype)
        if condition is not None and (content_length is None or content_length > self._inline_threshold):
            await self._precheck(resolved.store, key, condition)

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
            etag=new_etag(),
            modified_at=now,
            inline=bytes(buffer) if blob_id is None else None,
            blob_id=blob_id,
            expires_at=expires_at,
        )
        try:
            if basis is None:
                replaced = await self._index.put_record(
                    resolved.store.id, meta, condition=self._judged(resolved.store, key, condition, now, logged=True)
                )
            else:
                resolved, replaced = await self._put_as(principal, segment, resolved, basis, meta, condition)
        except PreconditionFailedError:
            if blob_id is not None:
                await self._blobs.delete(blob_id)
            raise
        except KvboxError:
            if blob_id is not None:
                await self._blobs.delete(blob_id)
            # A store deleted meanwhile. (Through `put_record_as` that is a basis that no longer
            # holds, and the error raised is the fresh decision's, on the store named now.)
            if basis is None and await self._index.get_store(resolved.store.id) is None:
                raise StoreNotFoundError() from None
            raise
        if self._hub is not None:
            self._hub.poke(resolved.store.id)
        if replaced is not None and replaced.blob_id:
            await self._blobs.delete(replaced.blob_id)
        return resolved, meta

    async def _put_as(
        self,
        principal: Principal,
        segment: str,
        resolved: Resolved,
        basis: WriteBasis,
        meta: RecordMeta,
        condition: Condition | None,
    ) -> tuple[Resolved, RecordMeta | None]:
        """Write `meta` if the rows the decision was made on still hold; when they changed,
        decide again on fresh rows (raising 401, 403 or 404 as a request starting now
        would) and write to the store named: by ID the same one, by name the one the name
        names now (its schema's checks made again when that is another store)."""
        store_id = resolved.store.id
        for _ in range(WRITE_ATTEMPTS):
            try:
                judged = self._judged(resolved.store, meta.key, condition, meta.modified_at, logged=True)
                return resolved, await self._index.put_record_as(basis, store_id, meta, condition=judged)
            except BasisChangedError:
                self._stores.forget_writable(principal, segment)
                principal = await self._auth.refresh(principal)
                resolved, basis = await self._stores.writable(principal, segment, fresh=True)
                if resolved.store.id != store_id:
                    await self._check_body_for(resolved.store, meta)
                    store_id = resolved.store.id
        raise StorageError(f"The rights on store {store_id} kept changing while a record was being written.")

    async def _check_body_for(self, store: Store, meta: RecordMeta) -> None:
        """The collection checks a stored body passed for one store, made for another."""
        collections = collections_for_key(store.schema, meta.key)
        check_content_type(collections, meta.key, meta.content_type)
        if not needs_body_check(collections, meta.content_type):
            return
        check_charset(meta.content_type)
        if meta.inline is not None:
            data = meta.inline
        else:
            assert meta.blob_id is not None
            data = b"".join([chunk async for chunk in await self._blobs.open(meta.blob_id)])
        check_json_body(
            collections, meta.key, meta.content_type, decode_bytes(data, meta.encoding, limit=self.max_record_size)
        )

    async def _precheck(self, store: Store, key: str, condition: Condition) -> None:
        """Refuse a large body before reading it when its condition already fails; the check
        that counts is the index's, made in one step with the write."""
        if not condition.holds(self._live(store, await self._index.get_record(store.id, key))):
            raise PreconditionFailedError()

    async def _read_meta(
        self, principal: Principal, segment: str, key: str, signature: str | None
    ) -> tuple[Resolved, RecordMeta]:
        validate_key(key)
        if self._index.shared_by_nodes:
            return await self._read_meta_as(principal, segment, key, signature)
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

    async def _read_meta_as(
        self, principal: Principal, segment: str, key: str, signature: str | None
    ) -> tuple[Resolved, RecordMeta]:
        """`_read_meta` in one round trip: every row the decision needs, read with the record."""
        ref = parse_ref(segment)
        if ref.by_name and ref.username is None and principal.user is None:
            raise TokenNotProvidedError()
        token, user = principal.token, principal.user
        lookup = StoreLookup(ref.store_id, ref.username, ref.name)
        if token is not None:
            seen = await self._index.read_record_as(token.token_hash, None, lookup, key)
        else:
            seen = await self._index.read_record_as(None, user.id if user is not None else None, lookup, key)
        who = self._auth.confirmed(principal, seen.token, seen.user)
        resolved = self._stores.decide(
            who, ref, seen.store, seen.owner, seen.grant, need=Permission.READ, signature=signature, record_key=key,
            record_op=True,
        )  # fmt: skip
        meta = self._live(resolved.store, seen.record)
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

    def _judged(
        self, store: Store, key: str, condition: Condition | None, now_ms: int, *, logged: bool = False
    ) -> Condition | None:
        """`condition` as the index checks it: against the record a reader sees at `now_ms`, so a
        record that has expired (its own expiry or the store's rules) counts as missing. A
        `logged` write to a store with expiry rules passes the rules' verdict even without a
        condition, so the change feed can tell a replaced record that had expired."""
        if condition is None:
            expiry = store.record_expiry
            if not (logged and self._hub is not None and (expiry.rules or expiry.retired)):
                return None
            condition = ANY_RECORD
        return condition.seen_at(now_ms, stale_before(store.record_expiry, key, now_ms))

    async def get(
        self,
        principal: Principal,
        segment: str,
        key: str,
        *,
        signature: str | None = None,
        options: ReadOptions = PLAIN_READ,
    ) -> RecordRead:
        """The record with its stored bytes (or the span `options.range` selects) open to stream.
        Raises `PreconditionFailedError` (412) and `RangeNotSatisfiableError` (416)."""
        resolved, meta = await self._read_meta(principal, segment, key, signature)
        self._stats.read(resolved.store.id, self._clock.now_ms())
        for _ in range(OPEN_ATTEMPTS):
            read = _plan(resolved, meta, options, ranged=True)
            if read.not_modified:
                return read
            try:
                read.body = await self._open_span(meta, read.span)
                return read
            except StorageError:
                fresh = self._live(resolved.store, await self._index.get_record(resolved.store.id, key))
                if fresh is not None and fresh.blob_id == meta.blob_id:
                    raise  # the row still points at it: the blob is really lost
                if fresh is None:
                    raise RecordNotFoundError() from None
                meta = fresh  # replaced meanwhile: plan again, the newer record may differ
        raise StorageError(f"Record {key!r} kept changing while it was being opened.")

    async def _open_span(self, meta: RecordMeta, span: ByteRange | None) -> AsyncGenerator[bytes, None]:
        """The record's stored bytes (or `span` of them). A concurrent write may replace (and
        delete) the blob between reading the row and opening it: then `StorageError`."""
        if meta.blob_id is None:
            return _one(meta.inline[span.start : span.end] if span and meta.inline else meta.inline)
        if span is None:
            return await self._blobs.open(meta.blob_id)
        return await self._blobs.open(meta.blob_id, start=span.start, end=span.end)

    async def head(
        self,
        principal: Principal,
        segment: str,
        key: str,
        *,
        signature: str | None = None,
        options: ReadOptions = PLAIN_READ,
    ) -> RecordRead:
        """The record's row, with its preconditions checked (a range does not apply to HEAD)."""
        resolved, meta = await self._read_meta(principal, segment, key, signature)
        self._stats.touched(resolved.store.id, self._clock.now_ms())
        return _plan(resolved, meta, options, ranged=False)

    async def delete(self, principal: Principal, segment: str, key: str, *, condition: Condition | None = None) -> None:
        """Deleting a missing record succeeds (idempotent, so `set_value(key, None)` never fails),
        unless `condition` asks for the record to exist. A condition that does not hold raises
        `PreconditionFailedError` and deletes nothing."""
        validate_key(key)
        resolved = await self._stores.resolve(principal, segment, need=Permission.WRITE, record_op=True)
        now = self._clock.now_ms()
        old = await self._index.delete_record(
            resolved.store.id, key, now_ms=now, condition=self._judged(resolved.store, key, condition, now)
        )
        if old is not None and self._hub is not None:
            self._hub.poke(resolved.store.id)
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
                opened = await self._open_whole(store, row)
                if opened is None:
                    continue  # deleted or expired while exporting
                yield opened
            if not page.is_truncated:
                return
            after = page.next_key

    async def _open_whole(
        self, store: Store, meta: RecordMeta | None
    ) -> tuple[RecordMeta, AsyncGenerator[bytes, None]] | None:
        """A record's row and its whole body open to stream; None when it is gone."""
        for _ in range(OPEN_ATTEMPTS):
            if meta is None:
                return None
            try:
                return meta, await self._open_span(meta, None)
            except StorageError:
                fresh = await self._index.get_record(store.id, meta.key)
                if fresh is not None and fresh.blob_id == meta.blob_id:
                    raise  # the row still points at it: the blob is really lost
                meta = self._live(store, fresh)
        raise StorageError(f"Record {meta.key if meta else ''!r} kept changing while it was being opened.")


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
