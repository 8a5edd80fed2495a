"""Remote mode: a store on a kvbox (or Apify) server, through `kvbox.client`.

`RemoteStore` and `RemoteStoreAsync` are twins over `KvboxClient` and `KvboxClientAsync`.
They move bytes and content types; the value rules live in `key_value_store.py`, shared
with local mode.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio

from kvbox.client import Change as RecordChange
from kvbox.client import (
    KeyItem,
    KvboxClient,
    KvboxClientAsync,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    Record,
    StoreInfo,
)
from kvbox.core.errors import RecordNotFoundError, StoreNotFoundError
from kvbox.sdk.models import RecordMetadata, StoreMetadata

Value = tuple[bytes, str | None]
Change = Callable[[Value | None], tuple[bytes, str] | None]

# The store a process gets by default when no default store ID is configured: the same
# name as the local default folder, so `default/` and the `default` store correspond.
DEFAULT_STORE_NAME = "default"


def _metadata(info: StoreInfo) -> StoreMetadata:
    return StoreMetadata(
        id=info.id,
        name=info.name,
        created_at=info.created_at,
        accessed_at=info.accessed_at,
        modified_at=info.modified_at,
    )


def _record_metadata(item: KeyItem) -> RecordMetadata:
    return RecordMetadata(item.key, item.size, item.content_type, item.modified_at, item.expires_at)


def _missing(what: str) -> StoreNotFoundError:
    return StoreNotFoundError(f"Key-value store {what} was not found on the server")


def _version(key: str, record: Record | None) -> tuple[Value | None, str | None]:
    """A record as `update` hands it to its change, and the ETag a conditional write names."""
    if record is None:
        return None, None
    if not record.etag:
        raise RuntimeError(f"The server sent no ETag for {key!r}: it cannot update records safely")
    return (record.value, record.content_type), record.etag


def _backoff(attempt: int) -> float:
    """Seconds to wait before trying an update again: jittered, so racing writers spread out."""
    return random.uniform(0, min(0.2, 0.002 * 2**attempt))


class RemoteStore:
    """The synchronous remote backend behind `KeyValueStoreSync`."""

    def __init__(self, client: KvboxClient, info: StoreInfo) -> None:
        self.meta = _metadata(info)
        self._store = client.key_value_store(info.id)

    @classmethod
    def open(
        cls, client: KvboxClient, *, name: str | None = None, id: str | None = None, default_store_id: str | None = None
    ) -> RemoteStore:
        """Open by ID (must exist), by name (created if missing), or the default store."""
        wanted = id or (None if name else default_store_id)
        if wanted is not None:
            info = client.key_value_store(wanted).get()
            if info is None:
                raise _missing(f'with ID "{wanted}"')
        else:
            info = client.key_value_stores().get_or_create(name or DEFAULT_STORE_NAME)
        return cls(client, info)

    def read(self, key: str) -> tuple[bytes, str] | None:
        record = self._store.get_record_as_bytes(key)
        return None if record is None else (record.value, record.content_type)

    def write(self, key: str, data: bytes, content_type: str, *, expires_in: int | None = None) -> None:
        self._store.set_record(key, data, content_type, expires_in=expires_in)

    def delete(self, key: str) -> None:
        self._store.delete_record(key)

    def update(self, key: str, change: Change, retries: int = 0) -> None:
        """Read, change and write back with `If-Match` (`If-None-Match: *` when it was missing);
        when another writer came first, read again, up to `retries` more times."""
        for attempt in range(retries + 1):
            current, etag = _version(key, self._store.get_record_as_bytes(key))
            new = change(current)
            try:
                if new is not None:
                    self._store.set_record(key, new[0], new[1], if_match=etag, if_none_match=None if etag else "*")
                elif etag is not None:
                    self._store.delete_record(key, if_match=etag)
                return
            except PreconditionFailedError:
                if attempt == retries:
                    raise
            time.sleep(_backoff(attempt))

    def stream(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        try:
            with self._store.stream_record(key, offset=offset, length=length) as record:
                if record is None:
                    raise RecordNotFoundError(f"Record {key!r} was not found on the server")
                yield from record.iter_bytes()
        except RangeNotSatisfiableError:
            return  # from the end on: nothing

    def delete_prefix(self, prefix: str) -> int:
        return self._store.delete_prefix(prefix)

    def watch(self, *, prefix: str | None, after: int) -> Iterator[RecordChange]:
        return self._store.watch(prefix=prefix, after=after)

    def exists(self, key: str) -> bool:
        return self._store.record_exists(key)

    def keys(self, exclusive_start_key: str | None = None, limit: int | None = None) -> Iterator[RecordMetadata]:
        for item in self._store.iterate_keys(exclusive_start_key=exclusive_start_key, limit=limit or None):
            yield _record_metadata(item)

    def public_url(self, key: str) -> str:
        return self._store.get_record_public_url(key)

    def metadata(self) -> StoreMetadata:
        info = self._store.get()
        if info is None:
            raise _missing(f'with ID "{self.meta.id}"')
        return _metadata(info)

    def drop(self) -> None:
        self._store.delete()


class RemoteStoreAsync:
    """The asynchronous remote backend behind `KeyValueStore`."""

    def __init__(self, client: KvboxClientAsync, info: StoreInfo) -> None:
        self.meta = _metadata(info)
        self._store = client.key_value_store(info.id)

    @classmethod
    async def open(
        cls,
        client: KvboxClientAsync,
        *,
        name: str | None = None,
        id: str | None = None,
        default_store_id: str | None = None,
    ) -> RemoteStoreAsync:
        """Open by ID (must exist), by name (created if missing), or the default store."""
        wanted = id or (None if name else default_store_id)
        if wanted is not None:
            info = await client.key_value_store(wanted).get()
            if info is None:
                raise _missing(f'with ID "{wanted}"')
        else:
            info = await client.key_value_stores().get_or_create(name or DEFAULT_STORE_NAME)
        return cls(client, info)

    async def read(self, key: str) -> tuple[bytes, str] | None:
        record = await self._store.get_record_as_bytes(key)
        return None if record is None else (record.value, record.content_type)

    async def write(self, key: str, data: bytes, content_type: str, *, expires_in: int | None = None) -> None:
        await self._store.set_record(key, data, content_type, expires_in=expires_in)

    async def delete(self, key: str) -> None:
        await self._store.delete_record(key)

    async def update(self, key: str, change: Change, retries: int = 0) -> None:
        """Read, change and write back with `If-Match` (`If-None-Match: *` when it was missing);
        when another writer came first, read again, up to `retries` more times."""
        for attempt in range(retries + 1):
            current, etag = _version(key, await self._store.get_record_as_bytes(key))
            new = change(current)
            try:
                if new is not None:
                    await self._store.set_record(
                        key, new[0], new[1], if_match=etag, if_none_match=None if etag else "*"
                    )
                elif etag is not None:
                    await self._store.delete_record(key, if_match=etag)
                return
            except PreconditionFailedError:
                if attempt == retries:
                    raise
            await anyio.sleep(_backoff(attempt))

    async def stream(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        try:
            async with self._store.stream_record(key, offset=offset, length=length) as record:
                if record is None:
                    raise RecordNotFoundError(f"Record {key!r} was not found on the server")
                async for chunk in record.aiter_bytes():
                    yield chunk
        except RangeNotSatisfiableError:
            return  # from the end on: nothing

    async def delete_prefix(self, prefix: str) -> int:
        return await self._store.delete_prefix(prefix)

    def watch(self, *, prefix: str | None, after: int) -> AsyncIterator[RecordChange]:
        return self._store.watch(prefix=prefix, after=after)

    async def exists(self, key: str) -> bool:
        return await self._store.record_exists(key)

    async def keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[RecordMetadata]:
        async for item in self._store.iterate_keys(exclusive_start_key=exclusive_start_key, limit=limit or None):
            yield _record_metadata(item)

    async def public_url(self, key: str) -> str:
        return await self._store.get_record_public_url(key)

    async def metadata(self) -> StoreMetadata:
        info = await self._store.get()
        if info is None:
            raise _missing(f'with ID "{self.meta.id}"')
        return _metadata(info)

    async def drop(self) -> None:
        await self._store.delete()
