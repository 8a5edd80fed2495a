"""`KeyValueStoreSync`: the blocking twin of `KeyValueStore`, for scripts without an event loop.

Same methods, same value rules (`_values.py`), same local and remote backends. Safe to use
from several threads.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from kvbox.client import Change as RecordChange
from kvbox.client import KvboxClient
from kvbox.core.errors import RecordNotFoundError
from kvbox.sdk import _values as values
from kvbox.sdk.config import Configuration
from kvbox.sdk.key_value_store import UPDATE_RETRIES, cache_key
from kvbox.sdk.local import LocalStore, open_folder
from kvbox.sdk.models import RecordMetadata, StoreMetadata
from kvbox.sdk.remote import DEFAULT_STORE_NAME, Change, RemoteStore


class SyncBackend(Protocol):
    meta: StoreMetadata

    def read(self, key: str) -> tuple[bytes, str | None] | None: ...
    def write(self, key: str, data: bytes, content_type: str, *, expires_in: int | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def update(self, key: str, change: Change, retries: int = 0) -> None: ...
    def stream(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def keys(self, exclusive_start_key: str | None, limit: int | None) -> Iterator[RecordMetadata]: ...
    def public_url(self, key: str) -> str: ...
    def metadata(self) -> StoreMetadata: ...
    def drop(self) -> None: ...


@dataclass
class _Registry:
    stores: dict[tuple[Configuration, str, str], KeyValueStoreSync] = field(default_factory=dict)
    clients: dict[Configuration, KvboxClient] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def client(self, config: Configuration) -> KvboxClient:
        if config not in self.clients:
            self.clients[config] = KvboxClient(
                config.token,
                api_url=config.api_url or "",
                public_url=config.public_url,
                compression=config.compression,
                max_retries=config.max_retries,
            )
        return self.clients[config]


_registry = _Registry()


class KeyValueStoreSync:
    """A store of records: JSON values, text, bytes. Open it with `KeyValueStoreSync.open(...)`."""

    def __init__(self, backend: SyncBackend, *, configuration: Configuration) -> None:
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
    def open(
        cls,
        *,
        id: str | None = None,
        name: str | None = None,
        configuration: Configuration | None = None,
        force_cloud: bool = False,
    ) -> KeyValueStoreSync:
        """The store called `name` (created if missing), the store with `id`, or the default store."""
        values.check_open_args(name, id)
        config = configuration or Configuration.from_env()
        if force_cloud:
            config = config.for_cloud()
        key = cache_key(config, name, id)
        with _registry.lock:
            if key not in _registry.stores:
                store = cls(_open_backend(config, name=name, id=id), configuration=config)
                _registry.stores[key] = store
                _registry.stores.setdefault(cache_key(config, None, store.id), store)
                if store.name:
                    _registry.stores.setdefault(cache_key(config, store.name, None), store)
            return _registry.stores[key]

    @classmethod
    def close_all(cls) -> None:
        """Forget every open store, save local timestamps, close HTTP clients."""
        with _registry.lock:
            for store in set(_registry.stores.values()):
                if isinstance(store._backend, LocalStore) and not store._dropped:
                    store._backend.flush()
            for client in _registry.clients.values():
                client.close()
            _registry.stores.clear()
            _registry.clients.clear()

    def get_metadata(self) -> StoreMetadata:
        return self._backend.metadata()

    def get_value(self, key: str, default_value: Any = None) -> Any:
        """The value of `key`; `default_value` only when the record does not exist."""
        values.check_read_key(key, remote=self._remote)
        found = self._backend.read(key)
        return default_value if found is None else values.decode(key, found[0], found[1])

    def set_value(
        self, key: str, value: Any, content_type: str | None = None, *, expires_in: float | timedelta | None = None
    ) -> None:
        """Store a value (see `_values` for the rules); `None` deletes the record. With
        `expires_in` (seconds or a timedelta) the record is gone that long after this write."""
        seconds = values.expiry_seconds(expires_in)
        if value is None:
            values.encode(key, b"", None)  # same key check as a write
            self._backend.delete(key)
            return
        data, ctype = values.encode(key, value, content_type)
        self._backend.write(key, data, ctype, expires_in=seconds)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every record whose key starts with `prefix` ("" for all); returns how many."""
        return self._backend.delete_prefix(prefix)

    def watch(self, *, prefix: str | None = None, after: int = 0) -> Iterator[RecordChange]:
        """Every change of the store after the sequence `after` (of keys starting with
        `prefix`) as it happens: `for change in store.watch(): ...`. Long-polls the server's
        change feed and resumes by itself after a lost connection (remote stores only)."""
        if not isinstance(self._backend, RemoteStore):
            raise NotImplementedError(
                "watch() follows a kvbox server's change feed; a store in a local folder has none."
            )
        return self._backend.watch(prefix=prefix, after=after)

    def delete_value(self, key: str) -> None:
        """Delete the record; a missing record is not an error."""
        values.check_read_key(key, remote=self._remote)
        self._backend.delete(key)

    def update_value(
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
        the folder's lock, shared by every process using the folder. `fn` may run more than
        once, so it should only compute the new value.
        """
        values.encode(key, b"", None)  # same key check as a write
        done: list[Any] = []

        def change(current: tuple[bytes, str | None] | None) -> tuple[bytes, str] | None:
            value = copy.deepcopy(default_value) if current is None else values.decode(key, *current)
            new = fn(value)
            done[:] = [new]
            return None if new is None else values.encode(key, new, content_type)

        self._backend.update(key, change, retries)
        return done[0]

    def get_record_range(self, key: str, offset: int, length: int | None = None) -> bytes | None:
        """`length` bytes (None: to the end) of the record's bytes from `offset` (negative: the
        last `-offset` bytes); None when the record does not exist. Past the end there is
        nothing (`b""`), as with a slice."""
        try:
            return b"".join(self.stream(key, offset=offset, length=length))
        except RecordNotFoundError:
            return None

    def stream(self, key: str, *, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The record's bytes in chunks, from `offset` on (at most `length` of them), with bounded
        memory; remotely a range read. `RecordNotFoundError` when the record does not exist."""
        values.check_read_key(key, remote=self._remote)
        values.check_range(offset, length)
        if length == 0:
            if not self._backend.exists(key):
                raise RecordNotFoundError(f"Record {key!r} was not found")
            return
        yield from self._backend.stream(key, offset, length)

    def record_exists(self, key: str) -> bool:
        values.check_read_key(key, remote=self._remote)
        return self._backend.exists(key)

    def iterate_keys(
        self, exclusive_start_key: str | None = None, limit: int | None = None
    ) -> Iterator[RecordMetadata]:
        """Keys in ascending order after `exclusive_start_key`; `limit` None or 0 means all."""
        return self._backend.keys(exclusive_start_key, limit or None)

    def list_keys(self, exclusive_start_key: str | None = None, limit: int = 1000) -> list[RecordMetadata]:
        return list(self.iterate_keys(exclusive_start_key, limit))

    def for_each_key(
        self, callback: Callable[[str, int, RecordMetadata], Any], *, exclusive_start_key: str | None = None
    ) -> None:
        """Call `callback(key, index, metadata)` for every key in order."""
        for index, item in enumerate(self.iterate_keys(exclusive_start_key)):
            callback(item.key, index, item)

    def __iter__(self) -> Iterator[str]:
        return (item.key for item in self.iterate_keys())

    def get_public_url(self, key: str) -> str:
        """Local: the record file's `file://` URI (the record must exist). Remote: its (signed) URL."""
        values.check_read_key(key, remote=self._remote)
        return self._backend.public_url(key)

    def drop(self) -> None:
        """Delete the store with all its records; later opens start a new, empty store."""
        self._backend.drop()
        self._dropped = True
        with _registry.lock:
            for alias in [k for k, v in _registry.stores.items() if v is self]:
                del _registry.stores[alias]


def _open_backend(config: Configuration, *, name: str | None, id: str | None) -> SyncBackend:
    if config.remote:
        client = _registry.client(config)
        return RemoteStore.open(client, name=name, id=id, default_store_id=config.default_store_id)
    return open_folder(
        config.storage_dir,
        name=None if name == DEFAULT_STORE_NAME else name,
        id=id,
        durable=config.durable,
        input_keys=frozenset({config.input_key, "INPUT"}),
    )
