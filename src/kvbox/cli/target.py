"""Where the data commands act: the operations (`Target`) and the rows they show.

A kvbox server over HTTP (`cli/remote.py`, through `kvbox.client`) and a data directory
opened in this process (`cli/local.py`, through the service calls the API makes) offer the
same operations, so a command never knows which one it has; `cli/session.py` chooses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import click

from kvbox.core.errors import StoreNotFoundError
from kvbox.core.ids import looks_like_id


@dataclass(frozen=True, slots=True)
class StoreRow:
    """A store as the data commands show it; the same fields in both modes."""

    id: str
    name: str | None
    user_id: str | None
    username: str | None
    created_at: str | None
    modified_at: str | None
    accessed_at: str | None
    general_access: str | None
    record_count: int | None
    storage_bytes: int | None
    expires_at: str | None
    record_expiry: tuple[tuple[str, int], ...] = ()  # (prefix, seconds after the last write)

    @property
    def label(self) -> str:
        """How messages name the store."""
        return f"{self.name} ({self.id})" if self.name else f"{self.id} (unnamed)"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "userId": self.user_id,
            "username": self.username,
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "accessedAt": self.accessed_at,
            "generalAccess": self.general_access,
            "recordCount": self.record_count,
            "storageBytes": self.storage_bytes,
            "expiresAt": self.expires_at,
            "recordExpiry": [{"prefix": p, "expireAfterSecs": n} for p, n in self.record_expiry],
        }


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as `kvbox keys` shows it; times are ISO 8601, `expires_at` None when it does not expire."""

    key: str
    size: int
    content_type: str | None = None
    modified_at: str | None = None
    etag: str | None = None
    expires_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "contentType": self.content_type,
            "modifiedAt": self.modified_at,
            "etag": self.etag,
            "expiresAt": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record's metadata. `size` is the stored size (compressed, for a record stored
    compressed), or the size of the range being read. `etag` is its version, quotes included."""

    key: str
    content_type: str
    size: int | None
    encoding: str
    etag: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "contentType": self.content_type,
            "size": self.size,
            "encoding": self.encoding,
            "etag": self.etag,
        }


class Source(Protocol):
    """What an upload reads: a binary file, stdin, or a wrapper counting what was read."""

    def read(self, size: int = -1, /) -> bytes: ...


class Download(Protocol):
    """A record being read: `chunks()` gives its content (or the range asked for); `transferred`
    counts stored bytes read so far. A download that loses its connection goes on with a range
    read of the same version; `RecordChangedError` when the record changed meanwhile."""

    info: RecordInfo

    @property
    def transferred(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class Target(Protocol):
    """The operations of the data commands. A missing store or record is None, other failures raise."""

    where: str

    async def get_store(self, segment: str) -> StoreRow | None: ...
    async def list_stores(self, *, unnamed: bool) -> list[StoreRow]: ...
    async def create_store(self, name: str | None) -> tuple[StoreRow, bool]: ...
    async def rename_store(self, store_id: str, name: str) -> StoreRow: ...
    async def delete_store(self, store_id: str) -> None: ...
    async def set_record_expiry(self, store_id: str, rules: list[tuple[str, int]]) -> StoreRow: ...
    def iterate_keys(self, store_id: str, *, prefix: str | None = None) -> AsyncIterator[KeyRow]: ...
    async def record_info(self, store_id: str, key: str) -> RecordInfo | None: ...
    def open_record(
        self, store_id: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AbstractAsyncContextManager[Download | None]:
        """The record (None: missing), or `length` bytes of its content from `offset` (a negative
        offset: the last bytes); a range past the end raises the 416 error."""
        ...

    async def put_record(
        self,
        store_id: str,
        key: str,
        source: Source,
        *,
        content_type: str,
        size: int | None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str | None:
        """Write the record; returns its new ETag. `if_match` (an ETag, or `*`) and `if_absent`
        make the write conditional: the 412 error when the record is not as asked."""
        ...

    async def delete_record(self, store_id: str, key: str) -> None: ...
    async def delete_prefix(self, store_id: str, prefix: str) -> int: ...
    def watch(self, store_id: str, *, prefix: str | None, after: int) -> AsyncIterator[dict[str, Any]]: ...
    async def add_webhook(
        self, store_id: str, url: str, *, event_types: list[str] | None, prefix: str | None, secret: str | None
    ) -> dict[str, Any]: ...
    async def list_webhooks(self, store_id: str) -> list[dict[str, Any]]: ...
    async def delete_webhook(self, store_id: str, webhook_id: str) -> None: ...
    async def webhook_deliveries(self, store_id: str, webhook_id: str) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


class DataError(click.ClickException):
    """A failure reported by the server or the backend: exit code 1, message on stderr."""

    exit_code = 1


class RecordChangedError(DataError):
    """A download lost its connection, and the record was written again before it could go on."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Record {key!r} changed while it was being downloaded.")


async def find_store(target: Target, ref: str) -> StoreRow | None:
    """A store by ID, by name (the caller's store) or as `owner~name`; None when there is none."""
    if "~" in ref:
        return await target.get_store(ref)
    segments = [ref, "~" + ref] if looks_like_id(ref) else ["~" + ref]
    for segment in segments:
        found = await target.get_store(segment)
        if found is not None:
            return found
    return None


async def resolve_store(target: Target, ref: str) -> StoreRow:
    """Like `find_store`, but a missing store is an error naming it."""
    found = await find_store(target, ref)
    if found is None:
        raise DataError(
            f'Key-value store "{ref}" was not found ({StoreNotFoundError.type}) on {target.where}. '
            "`kvbox stores ls` lists the stores you can use."
        )
    return found
