"""`KeyValueStore`: the async store of the SDK, in local or remote mode (`KeyValueStoreSync` is its twin).

Opening the same store twice (by name or by ID, with an equal configuration, in the same
event loop) gives the same object, as in crawlee.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import anyio.to_thread

from kvbox.client import Change as RecordChange
from kvbox.client import KvboxClientAsync
from kvbox.core.errors import RecordNotFoundError
from kvbox.sdk import _values as values
from kvbox.sdk.config import Configuration
from kvbox.sdk.local import LocalStore, open_folder
from kvbox.sdk.models import RecordMetadata, StoreMetadata
from kvbox.sdk.remote import DEFAULT_STORE_NAME, Change, RemoteStoreAsync

# Local files at least this large are read and written in a worker thread; smaller ones
# inline, where a thread hop would cost more than the I/O itself.
OFFLOAD_BYTES = 1024 * 1024

KeyCallback = Callable[[str, int, RecordMetadata], Awaitable[None] | None]
# Attempts after the first when another writer wins the race (remote mode).
UPDATE_RETRIES = 10


class AsyncBackend(Protocol):
    meta: StoreMetadata

    async def read(self, key: str) -> tuple[bytes, str | None] | None: ...
    async def write(self, key: str, data: bytes, content_type: str, *, expires_in: int | None = None) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def update(self, key: str, change: Change, retries: int = 0) -> None: ...
    def stream(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def exists(self, key: str) -> bool: ...
    def keys(self, exclusive_start_key: str | None, limit: int | None) -> AsyncIterator[RecordMetadata]: ...
    async def public_url(self, key: str) -> str: ...
    async def metadata(self) -> StoreMetadata: ...
    async def drop(self) -> None: ...


class LocalStoreAsync:
    """A `LocalStore` behind the async interface."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.meta = store.meta

    async def read(self, key: str) -> tuple[bytes, str | None] | None:
        found = self.store.locate(key)
        if found is None:
            return None
        if found.size >= OFFLOAD_BYTES:
            return await anyio.to_thread.run_sync(self.store.read, key)
        data = self.store.read_located(found)
        return (data, found.content_type) if data is not None else self.store.read(key, moving=True)

    async def write(self, key: str, data: bytes, content_type: str, *, expires_in: int | None = None) -> None:
        if len(data) >= OFFLOAD_BYTES:
            await anyio.to_thread.run_sync(lambda: self.store.write(key, data, content_type, expires_in=expires_in))
        else:
            self.store.write(key, data, content_type, expires_in=expires_in)

    async def delete(self, key: str) -> None:
        self.store.delete(key)

    async def update(self, key: str, change: Change, retries: int = 0) -> None:
        # In a worker thread: the folder's lock may be held by another process meanwhile.
        await anyio.to_thread.run_sync(self.store.update, key, change)

    async def stream(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        chunks = self.store.stream(key, offset, length)
        try:
            while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
                yield chunk
        finally:
            chunks.close()

    async def delete_prefix(self, prefix: str) -> int:
        return await anyio.to_thread.run_sync(self.store.delete_prefix, prefix)

    async def exists(self, key: str) -> bool:
        return self.store.exists(key)

    async def keys(self, exclusive_start_key: str | None, limit: int | None) -> AsyncIterator[RecordMetadata]:
        for item in self.store.keys(exclusive_start_key, limit):
            yield item

    async def public_url(self, key: str) -> str:
        return self.store.public_url(key)

    async def metadata(self) -> StoreMetadata:
        return self.store.metadata()

    async def drop(self) -> None:
        await anyio.to_thread.run_sync(self.store.drop)


@dataclass
class _Registry:
    """Open stores and HTTP clients of one event loop."""

    stores: dict[tuple[Configuration, str, str], KeyValueStore] = field(default_factory=dict)
    clients: dict[Configuration, KvboxClientAsync] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def client(self, config: Configuration) -> KvboxClientAsync:
        if config not in self.clients:
            self.clients[config] = KvboxClientAsync(
                config.token,
                api_url=config.api_url or "",
                public_url=config.public_url,
                compression=config.compression,
                max_retries=config.max_retries,
            )
        return self.clients[config]


# An httpx client belongs to the loop it was first used in, so each loop has its own registry.
_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Registry] = weakref.WeakKeyDictionary()


def _registry() -> _Registry:
    loop = asyncio.get_running_loop()
    if loop not in _registries:
        _registries[loop] = _Registry()
    return _registries[loop]


def cache_key(config: Configuration, name: str | None, id: str | None) -> tuple[Configuration, str, str]:
    if id is not None:
        return (config, "id", id)
    return (config, "name", name or DEFAULT_STORE_NAME)


class KeyValueStore:
    """A store of records: JSON values, text, bytes. Open it with `await KeyValueStore.open(...)`."""

    def __init__(self, backend: AsyncBackend, *, configuration: Configuration) -> None:
        self._backend = backend
        self._config = configuration
        self._remote = configuration.remote
        self._dropped = False

    @property
    def id(self) -> str:
        return self._backend.meta.id

    @property
    def name(self) -> str | None:
        return self._backend.meta.name

    @classmethod
    async def open(
        cls,
        *,
        id: str | None = None,
        name: str | None = None,
        configuration: Configuration | None = None,
        force_cloud: bool = False,
    ) -> KeyValueStore:
        """The store called `name` (created if missing), the store with `id`, or the default store."""
        values.check_open_args(name, id)
        config = configuration or Configuration.from_env()
        if force_cloud:
            config = config.for_cloud()
        registry = _registry()
        key = cache_key(config, name, id)
        async with registry.lock:
            if key not in registry.stores:
                store = cls(await _open_backend(config, registry, name=name, id=id), configuration=config)
                registry.stores[key] = store
                registry.stores.setdefault(cache_key(config, None, store.id), store)
                if store.name:
                    registry.stores.setdefault(cache_key(config, store.name, None), store)
            return registry.stores[key]

    @classmethod
    async def close_all(cls) -> None:
        """Forget every open store of this event loop, save local timestamps, close HTTP clients."""
        registry = _registries.pop(asyncio.get_running_loop(), None)
        if registry is None:
            return
        for store in set(registry.stores.values()):
            if isinstance(store._backend, LocalStoreAsync) and not store._dropped:
                store._backend.store.flush()
        for client in registry.clients.values():
            await client.aclose()

    async def get_metadata(self) -> StoreMetadata:
        return await self._backend.metadata()

    async def get_value(self, key: str, default_value: Any = None) -> Any:
        """The value of `key`; `default_value` only when the record does not exist."""
        values.check_read_key(key, remote=self._remote)
        found = await self._backend.read(key)
        return default_value if found is None else values.decode(key, found[0], found[1])

    async def set_value(
        self, key: str, value: Any, content_type: str | None = None, *, expires_in: float | timedelta | None = None
    ) -> None:
        """Store a value (see `_values` for the rules); `None` deletes the record. With
        `expires_in` (seconds or a timedelta) the record is gone that long after this write."""
        seconds = values.expiry_seconds(expires_in)
        if value is None:
            values.encode(key, b"", None)  # same key check as a write
            await self._backend.delete(key)
            return
        data, ctype = values.encode(key, value, content_type)
        await self._backend.write(key, data, ctype, expires_in=seconds)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every record whose key starts with `prefix` ("" for all); returns how many."""
        return await self._backend.delete_prefix(prefix)

    def watch(self, *, prefix: str | None = None, after: int = 0) -> AsyncIterator[RecordChange]:
        """Every change of the store after the sequence `after` (of keys starting with
        `prefix`) as it happens: `async for change in store.watch(): ...`. Long-polls the
        server's change feed and resumes by itself after a lost connection (remote stores only)."""
        if not isinstance(self._backend, RemoteStoreAsync):
            raise NotImplementedError(
                "watch() follows a kvbox server's change feed; a store in a local folder has none."
            )
        return self._backend.watch(prefix=prefix, after=after)

    async def delete_value(self, key: str) -> None:
        """Delete the record; a missing record is not an error."""
        values.check_read_key(key, remote=self._remote)
        await self._backend.delete(key)

    async def update_value(
        self,
        key: str,
        fn: Callable[[Any], Any],
        *,
        default_value: Any = None,
        content_type: str | None = None,
        retries: int = UPDATE_RETRIES,
    ) -> Any:
        """Set the value to `fn(current value)` (`default_value` when there is none; `fn`
        returning None deletes the record) with no other write in between; returns the new value.

        Remote: a compare-and-set (`If-Match`); when another writer wins, the value is read and
        `fn` called again, up to `retries` more times, then `PreconditionFailedError`. Local: under
        the folder's lock, shared by every process using the folder (`fn` runs once, in a worker
        thread). `fn` may run more than once, so it should only compute the new value.
        """
        values.encode(key, b"", None)  # same key check as a write
        done: list[Any] = []

        def change(current: tuple[bytes, str | None] | None) -> tuple[bytes, str] | None:
            value = copy.deepcopy(default_value) if current is None else values.decode(key, *current)
            new = fn(value)
            done[:] = [new]
            return None if new is None else values.encode(key, new, content_type)

        await self._backend.update(key, change, retries)
        return done[0]

    async def get_record_range(self, key: str, offset: int, length: int | None = None) -> bytes | None:
        """`length` bytes (None: to the end) of the record's bytes from `offset` (negative: the
        last `-offset` bytes); None when the record does not exist. Past the end there is
        nothing (`b""`), as with a slice."""
        try:
            return b"".join([chunk async for chunk in self.stream(key, offset=offset, length=length)])
        except RecordNotFoundError:
            return None

    async def stream(self, key: str, *, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """The record's bytes in chunks, from `offset` on (at most `length` of them), with bounded
        memory; remotely a range read. `RecordNotFoundError` when the record does not exist."""
        values.check_read_key(key, remote=self._remote)
        values.check_range(offset, length)
        if length == 0:
            if not await self._backend.exists(key):
                raise RecordNotFoundError(f"Record {key!r} was not found")
            return
        async for chunk in self._backend.stream(key, offset, length):
            yield chunk

    async def record_exists(self, key: str) -> bool:
        values.check_read_key(key, remote=self._remote)
        return await self._backend.exists(key)

    def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> AsyncIterator[RecordMetadata]:
        """Keys in ascending order after `exclusive_start_key`; `limit` None or 0 means all."""
        return self._backend.keys(exclusive_start_key, limit or None)

    async def list_keys(self, exclusive_start_key: str | None = None, limit: int = 1000) -> list[RecordMetadata]:
        return [item async for item in self.iterate_keys(exclusive_start_key, limit)]

    async def for_each_key(self, callback: KeyCallback, *, exclusive_start_key: str | None = None) -> None:
        """Call `callback(key, index, metadata)` for every key in order (awaited when async)."""
        index = 0
        async for item in self.iterate_keys(exclusive_start_key):
            result = callback(item.key, index, item)
            if inspect.isawaitable(result):
                await result
            index += 1

    def __aiter__(self) -> AsyncIterator[str]:
        return (item.key async for item in self.iterate_keys())

    async def get_public_url(self, key: str) -> str:
        """Local: the record file's `file://` URI (the record must exist). Remote: its (signed) URL."""
        values.check_read_key(key, remote=self._remote)
        return await self._backend.public_url(key)

    async def drop(self) -> None:
        """Delete the store with all its records; later opens start a new, empty store."""
        await self._backend.drop()
        self._dropped = True
        registry = _registry()
        for alias in [k for k, v in registry.stores.items() if v is self]:
            del registry.stores[alias]


async def _open_backend(
    config: Configuration, registry: _Registry, *, name: str | None, id: str | None
) -> AsyncBackend:
    if config.remote:
        return await RemoteStoreAsync.open(
            registry.client(config), name=name, id=id, default_store_id=config.default_store_id
        )
    local = open_folder(
        config.storage_dir,
        name=None if name == DEFAULT_STORE_NAME else name,
        id=id,
        durable=config.durable,
        input_keys=frozenset({config.input_key, "INPUT"}),
    )
    return LocalStoreAsync(local)
