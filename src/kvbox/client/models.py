"""What the client returns: stores, pages of stores and keys, records.

Built from the API's camelCase JSON; fields the server adds beyond these stay in `raw`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from kvbox.core.ranges import aslice_chunks, slice_chunks


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (`2026-01-01T00:00:00.000Z`) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class ExpiryRule:
    """A store rule (kvbox extension): records whose key starts with `prefix` expire
    `expire_after_secs` seconds after their last write, unless they carry their own expiry."""

    prefix: str
    expire_after_secs: int

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ExpiryRule:
        return cls(prefix=data.get("prefix") or "", expire_after_secs=int(data["expireAfterSecs"]))

    def to_api(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "expireAfterSecs": self.expire_after_secs}


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A key-value store as the API describes it (the platform's `KeyValueStore` object)."""

    id: str
    name: str | None
    user_id: str | None
    username: str | None
    created_at: datetime | None
    modified_at: datetime | None
    accessed_at: datetime | None
    general_access: str | None
    url_signing_secret_key: str | None
    keys_public_url: str | None
    records_public_url: str | None
    schema: dict[str, Any] | None
    stats: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)
    record_expiry: list[ExpiryRule] = field(default_factory=list)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> StoreInfo:
        return cls(
            id=data["id"],
            name=data.get("name"),
            user_id=data.get("userId"),
            username=data.get("username"),
            created_at=parse_time(data.get("createdAt")),
            modified_at=parse_time(data.get("modifiedAt")),
            accessed_at=parse_time(data.get("accessedAt")),
            general_access=data.get("generalAccess"),
            url_signing_secret_key=data.get("urlSigningSecretKey"),
            keys_public_url=data.get("keysPublicUrl"),
            records_public_url=data.get("recordsPublicUrl"),
            schema=data.get("schema"),
            stats=data.get("stats") or {},
            raw=data,
            record_expiry=[ExpiryRule.from_api(rule) for rule in data.get("recordExpiry") or []],
        )


@dataclass(frozen=True, slots=True)
class StoreList:
    """One page of `GET /v2/key-value-stores`."""

    items: list[StoreInfo]
    total: int
    offset: int
    limit: int
    count: int
    desc: bool

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> StoreList:
        items = [StoreInfo.from_api(item) for item in data.get("items", [])]
        return cls(
            items=items,
            total=int(data.get("total", len(items))),
            offset=int(data.get("offset", 0)),
            limit=int(data.get("limit", len(items))),
            count=int(data.get("count", len(items))),
            desc=bool(data.get("desc", False)),
        )


@dataclass(frozen=True, slots=True)
class KeyItem:
    """One entry of a key listing. kvbox adds the record's content type, last write, ETag (as
    its header gives it, quotes included) and expiry; other servers may leave them None."""

    key: str
    size: int
    record_public_url: str | None = None
    content_type: str | None = None
    modified_at: datetime | None = None
    etag: str | None = None
    expires_at: datetime | None = None

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> KeyItem:
        return cls(
            key=item["key"],
            size=int(item.get("size") or 0),
            record_public_url=item.get("recordPublicUrl"),
            content_type=item.get("contentType"),
            modified_at=parse_time(item.get("modifiedAt")),
            etag=item.get("etag"),
            expires_at=parse_time(item.get("expiresAt")),
        )


@dataclass(frozen=True, slots=True)
class KeyList:
    """One page of `GET /v2/key-value-stores/{id}/keys`."""

    items: list[KeyItem]
    count: int
    limit: int
    is_truncated: bool
    exclusive_start_key: str | None
    next_exclusive_start_key: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> KeyList:
        items = [KeyItem.from_api(item) for item in data.get("items", [])]
        return cls(
            items=items,
            count=int(data.get("count", len(items))),
            limit=int(data.get("limit", len(items))),
            is_truncated=bool(data.get("isTruncated", False)),
            exclusive_start_key=data.get("exclusiveStartKey"),
            next_exclusive_start_key=data.get("nextExclusiveStartKey"),
        )


@dataclass(frozen=True, slots=True)
class Record:
    """A record read in full (or a range of it). `value` is parsed JSON, decoded text or bytes
    (see `get_record`). `etag` is the version read, as the `ETag` header gives it (quotes
    included): pass it as `if_match` to write only over this version."""

    key: str
    value: Any
    content_type: str
    etag: str | None = None


@dataclass(slots=True)
class RecordStream:
    """A record being downloaded, from `offset` on (at most `length` bytes when given). Read it
    with `iter_bytes()` (sync) or `aiter_bytes()` (async).

    Only valid inside the `stream_record` context that produced it; memory use is one chunk.
    A negative `offset` reads the last `-offset` bytes. A server that sent the whole record
    instead of the range asked for (one that decodes a compressed record for the caller, or
    knows no ranges) is cut to the range here.
    """

    key: str
    content_type: str
    response: httpx.Response = field(repr=False)
    offset: int = 0
    length: int | None = None
    skip: int = field(default=0, repr=False)  # bytes of the response before `offset`

    @property
    def etag(self) -> str | None:
        """The version being read (the `ETag` header, quotes included)."""
        etag: str | None = self.response.headers.get("etag")
        return etag

    @property
    def size(self) -> int | None:
        """How many bytes this stream gives, when the server announced a length (not when it
        decodes on the fly)."""
        value = self.response.headers.get("content-length")
        if not value or not value.isdigit():
            return None
        size = min(int(value), -self.skip) if self.skip < 0 else max(int(value) - self.skip, 0)
        return size if self.length is None else min(size, self.length)

    def iter_bytes(self, chunk_size: int | None = 64 * 1024) -> Iterator[bytes]:
        chunks = self.response.iter_bytes(chunk_size)
        return chunks if not self.skip and self.length is None else slice_chunks(chunks, self.skip, self.length)

    def aiter_bytes(self, chunk_size: int | None = 64 * 1024) -> AsyncIterator[bytes]:
        chunks = self.response.aiter_bytes(chunk_size)
        return chunks if not self.skip and self.length is None else aslice_chunks(chunks, self.skip, self.length)


@dataclass(frozen=True, slots=True)
class Grant:
    """A user a store is shared with (kvbox's sharing extension)."""

    user_id: str
    username: str
    permission: str
    created_at: datetime | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Grant:
        return cls(
            user_id=data["userId"],
            username=data["username"],
            permission=data["permission"],
            created_at=parse_time(data.get("createdAt")),
        )


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The caller's account (`/v2/users/me`)."""

    id: str
    username: str
    created_at: datetime | None
    default_general_access: str | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> UserInfo:
        return cls(
            id=data["id"],
            username=data["username"],
            created_at=parse_time(data.get("createdAt")),
            default_general_access=data.get("defaultGeneralAccess"),
        )
