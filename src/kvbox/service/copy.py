"""Copying a whole deployment into another, empty one, and checking the copy (`kvbox copy`).

The copy works on the backend contracts (rows and bytes), below the other use cases: it keeps
ids, tokens, counters and timestamps exactly, and moves bodies without decoding them. Both
sides are walked in the same order and tallied: counts, and one SHA-256 over every row and
body, so reading the target back proves the copy whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.errors import StorageError, TargetNotEmptyError
from kvbox.core.models import RecordMeta, Store, User
from kvbox.service.deployment import opened_storage
from kvbox.service.settings import Settings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PAGE = 500

Storage = tuple[MetadataIndex, BlobStore]


@dataclass
class Tally:
    """What a deployment holds, with one SHA-256 over every row and body in listing order."""

    users: int = 0
    tokens: int = 0
    stores: int = 0
    grants: int = 0
    records: int = 0
    bytes: int = 0
    _digest: Any = field(default_factory=hashlib.sha256)

    def add(self, kind: str, row: DataclassInstance, body_sha: str = "") -> None:
        fields = dataclasses.asdict(row)
        fields.pop("inline", None)  # the body counts through its hash, wherever it lives
        fields.pop("blob_id", None)
        # A store's record count and bytes are checked through its records: the source may
        # still count rows that a delete by prefix hid and that are not copied.
        fields.pop("record_count", None)
        fields.get("stats", {}).pop("storage_bytes", None)
        line = json.dumps([kind, fields, body_sha], sort_keys=True, default=str)
        self._digest.update(line.encode() + b"\n")

    @property
    def checksum(self) -> str:
        return str(self._digest.hexdigest())

    def counts(self) -> tuple[int, ...]:
        return (self.users, self.tokens, self.stores, self.grants, self.records, self.bytes)

    def matches(self, other: Tally) -> bool:
        return (self.counts(), self.checksum) == (other.counts(), other.checksum)


class CopyPhase(Enum):
    COPYING = "copying"
    VERIFYING = "verifying"


Progress = Callable[[CopyPhase, Tally], None]
"""Told after each store, with the phase and the tally so far."""


def _quiet(phase: CopyPhase, tally: Tally) -> None:
    del phase, tally


@dataclass(frozen=True, slots=True)
class CopyReport:
    """The source as copied and the target as read back; they match when the copy is whole."""

    copied: Tally
    check: Tally

    @property
    def verified(self) -> bool:
        return self.copied.matches(self.check)


async def copy_and_verify(source: Settings, target: Settings, *, progress: Progress = _quiet) -> CopyReport:
    """Copy the deployment `source` names into the empty one `target` names (its schema is
    created first), then read the target back. Raises `TargetNotEmptyError` when the target
    has users, and ValueError for settings that name no usable backend."""
    async with opened_storage(source) as src, opened_storage(target) as dst:
        await dst[0].migrate()
        copied = await copy_deployment(src, dst, progress=lambda t: progress(CopyPhase.COPYING, t))
        check = await fingerprint(*dst, progress=lambda t: progress(CopyPhase.VERIFYING, t))
    return CopyReport(copied, check)


async def copy_deployment(src: Storage, dst: Storage, *, progress: Callable[[Tally], None] | None = None) -> Tally:
    """Copy every user, token, store, grant and record from `src` into the empty `dst`."""
    s_index, d_index = src[0], dst[0]
    if await d_index.list_users():
        raise TargetNotEmptyError()
    tally = Tally()
    users = await s_index.list_users()
    for user in users:
        await d_index.insert_user(user)
        tally.users += 1
        tally.add("user", user)
        for token in await s_index.list_tokens(user.id):
            await d_index.insert_token(token)
            tally.tokens += 1
            tally.add("token", token)
    for user in users:
        async for store in stores_of(s_index, user):
            await _copy_store(store, src, dst, tally)
            if progress is not None:
                progress(tally)
    return tally


async def _copy_store(store: Store, src: Storage, dst: Storage, tally: Tally) -> None:
    (s_index, s_blobs), (d_index, d_blobs) = src, dst
    # put_record counts each write and adds each size: start from the source's counters
    # less what the copied records will add, so they end up exactly equal.
    n = await _count_keys(s_index, store.id)
    stats = dataclasses.replace(store.stats, write_count=store.stats.write_count - n, storage_bytes=0)
    await d_index.insert_store(dataclasses.replace(store, stats=stats, record_count=0))
    for grant in await s_index.list_grants(store.id):
        await d_index.set_grant(grant)
        tally.grants += 1
        tally.add("grant", grant)
    async for meta in records_of(s_index, store.id):
        row, sha = await _copy_record(meta, s_blobs, d_blobs)
        await d_index.put_record(store.id, row)
        tally.records += 1
        tally.bytes += meta.size
        tally.add("record", meta, sha)
    tally.stores += 1
    tally.add("store", store)


async def fingerprint(
    index: MetadataIndex, blobs: BlobStore, *, progress: Callable[[Tally], None] | None = None
) -> Tally:
    """Walk a deployment in the order `copy_deployment` does and tally it."""
    tally = Tally()
    users = await index.list_users()
    for user in users:
        tally.users += 1
        tally.add("user", user)
        for token in await index.list_tokens(user.id):
            tally.tokens += 1
            tally.add("token", token)
    for user in users:
        async for store in stores_of(index, user):
            for grant in await index.list_grants(store.id):
                tally.grants += 1
                tally.add("grant", grant)
            async for meta in records_of(index, store.id):
                tally.records += 1
                tally.bytes += meta.size
                tally.add("record", meta, await body_sha(blobs, meta))
            current = await index.get_store(store.id)
            if current is None:
                raise StorageError(f"Store {store.id} vanished while the deployment was being read")
            tally.stores += 1
            tally.add("store", current)
            if progress is not None:
                progress(tally)
    return tally


async def stores_of(index: MetadataIndex, user: User) -> AsyncIterator[Store]:
    """Every store the user owns, named or not, oldest first."""
    offset = 0
    while True:
        page = await index.list_stores(user.id, include_unnamed=True, offset=offset, limit=PAGE, desc=False)
        for store in page.items:
            yield store
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


async def records_of(index: MetadataIndex, store_id: str) -> AsyncIterator[RecordMeta]:
    """Every record row of a store in key order (one deleted meanwhile is left out)."""
    after: str | None = None
    while True:
        page = await index.list_keys(store_id, after=after, prefix=None, limit=PAGE)
        for item in page.items:
            meta = await index.get_record(store_id, item.key)
            if meta is not None:
                yield meta
        if not page.is_truncated:
            return
        after = page.next_key


async def _count_keys(index: MetadataIndex, store_id: str) -> int:
    n, after = 0, None
    while True:
        page = await index.list_keys(store_id, after=after, prefix=None, limit=PAGE)
        n += len(page.items)
        if not page.is_truncated:
            return n
        after = page.next_key


async def body_of(blobs: BlobStore, meta: RecordMeta) -> AsyncIterator[bytes]:
    """A record's stored bytes, inline or from its blob (`StorageError` when the blob is missing)."""
    if meta.blob_id is None:
        if meta.inline:
            yield meta.inline
        return
    async for chunk in await blobs.open(meta.blob_id):
        yield chunk


async def body_sha(blobs: BlobStore, meta: RecordMeta) -> str:
    sha = hashlib.sha256()
    async for chunk in body_of(blobs, meta):
        sha.update(chunk)
    return sha.hexdigest()


async def _copy_record(meta: RecordMeta, src: BlobStore, dst: BlobStore) -> tuple[RecordMeta, str]:
    """The row to write on the target (with a new blob id) and the body's SHA-256."""
    sha = hashlib.sha256()
    writer = await dst.create() if meta.blob_id is not None else None
    try:
        async for chunk in body_of(src, meta):
            sha.update(chunk)
            if writer is not None:
                await writer.write(chunk)
        blob_id = await writer.commit() if writer is not None else None
    except BaseException:
        if writer is not None:
            await writer.abort()
        raise
    return dataclasses.replace(meta, blob_id=blob_id), sha.hexdigest()
