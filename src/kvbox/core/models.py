"""Domain records shared by the backends and the service layer.

They are immutable: a backend or cache may hand the same row to many callers, and a
change is a new value (`dataclasses.replace`). `fast_init` (frozen.py) keeps building
them nearly as cheap as building mutable rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from kvbox.core.frozen import fast_init


class GeneralAccess(StrEnum):
    RESTRICTED = "RESTRICTED"
    ANYONE_WITH_ID_CAN_READ = "ANYONE_WITH_ID_CAN_READ"
    ANYONE_WITH_NAME_CAN_READ = "ANYONE_WITH_NAME_CAN_READ"
    FOLLOW_USER_SETTING = "FOLLOW_USER_SETTING"


@fast_init
@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    created_at: int
    default_general_access: GeneralAccess = GeneralAccess.RESTRICTED


@fast_init
@dataclass(frozen=True, slots=True)
class Token:
    """An API token. Only `token_hash` (SHA-256 of the secret) is ever stored.

    A scoped token can be limited to reading (`read_only`) and/or to a list of stores
    (`store_ids`); it never grants more than its user holds.
    """

    id: str
    user_id: str
    token_hash: str
    name: str
    created_at: int
    read_only: bool = False
    store_ids: tuple[str, ...] | None = None


class Permission(IntEnum):
    """What a caller may do with a store; each level includes the ones below it.

    READ: get the store, list keys, read records, download the ZIP. WRITE: also put and
    delete records and rename the store. MANAGE: also change general access, share and
    unshare, delete the store. The owner holds MANAGE.
    """

    NONE = 0
    READ = 1
    WRITE = 2
    MANAGE = 3


@fast_init
@dataclass(frozen=True, slots=True)
class Grant:
    """A store shared with a user."""

    store_id: str
    user_id: str
    permission: Permission
    created_at: int


@fast_init
@dataclass(frozen=True, slots=True)
class StoreStats:
    read_count: int = 0
    write_count: int = 0
    delete_count: int = 0
    list_count: int = 0
    storage_bytes: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class ExpiryRule:
    """A store rule: records whose key starts with `prefix` expire `expire_after_secs` after
    their last write (unless they carry their own expiry)."""

    prefix: str
    expire_after_secs: int


@fast_init
@dataclass(frozen=True, slots=True)
class RetiredRules:
    """Rules a store had until `retired_at`: what they had expired by then stays gone."""

    rules: tuple[ExpiryRule, ...]
    retired_at: int


@fast_init
@dataclass(frozen=True, slots=True)
class RecordExpiry:
    """A store's expiry rules in force, longest prefix first, and the rule sets it replaced
    that may still hide records the sweeper has not reclaimed yet (see core/expiry.py)."""

    rules: tuple[ExpiryRule, ...] = ()
    retired: tuple[RetiredRules, ...] = ()


NO_EXPIRY = RecordExpiry()


@fast_init
@dataclass(frozen=True, slots=True)
class Visibility:
    """What a reader sees of a store's records at `now_ms`: those its `expiry` has not expired."""

    now_ms: int
    expiry: RecordExpiry = NO_EXPIRY


@fast_init
@dataclass(frozen=True, slots=True)
class Store:
    id: str
    name: str | None
    user_id: str
    created_at: int
    modified_at: int
    accessed_at: int
    url_signing_secret: str
    general_access: GeneralAccess = GeneralAccess.FOLLOW_USER_SETTING
    schema: dict[str, Any] | None = None
    stats: StoreStats = field(default_factory=StoreStats)
    record_count: int = 0
    title: str | None = None
    record_expiry: RecordExpiry = NO_EXPIRY


@fast_init
@dataclass(frozen=True, slots=True)
class RecordMeta:
    """One record's index row. The body is `inline` or lives in the blob store under `blob_id`.

    `expires_at` is the record's own expiry (ms), set by the writer; None when it has none
    (a store rule may still expire it: core/expiry.py).
    """

    key: str
    content_type: str
    encoding: str
    size: int
    etag: str
    modified_at: int
    inline: bytes | None = None
    blob_id: str | None = None
    expires_at: int | None = None


class KeyItem(NamedTuple):
    """One key of a listing with its row's fields; `expires_at` is the record's own expiry.

    A named tuple: a page builds up to a thousand straight from the index's rows
    (`KeyItem._make(row)`), at a fraction of a dataclass's cost."""

    key: str
    size: int
    content_type: str = ""
    modified_at: int = 0
    etag: str = ""
    expires_at: int | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class KeyPage:
    items: list[KeyItem]
    is_truncated: bool

    @property
    def next_key(self) -> str | None:
        return self.items[-1].key if self.is_truncated and self.items else None


@fast_init
@dataclass(frozen=True, slots=True)
class StorePage:
    total: int
    items: list[Store]


@fast_init
@dataclass(frozen=True, slots=True)
class StatsDelta:
    """Reads and lists of one store counted in memory and flushed in batches (they are not
    worth a commit each), and the latest access among them."""

    reads: int = 0
    lists: int = 0
    accessed_at: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class Condition:
    """What a record must look like for a write or delete to go ahead, checked by the index in
    the same atomic step as the change (so two writers racing with one `If-Match` never both
    win). ETags are bare (no quotes), as `RecordMeta.etag` holds them.

    `if_match`: the record exists and its ETag is one of these (an empty tuple matches nothing).
    `if_none_match`: the record is missing or its ETag is none of these.
    `must_exist` (`If-Match: *`) and `must_not_exist` (`If-None-Match: *`).

    An expired record counts as missing: with `now_ms` set, a row whose own expiry is at or
    before it, or (without its own expiry) last written at or before `stale_before` (the
    store's rules for its key, from `core/expiry.py`'s `stale_before`), is not there.
    """

    if_match: tuple[str, ...] | None = None
    if_none_match: tuple[str, ...] | None = None
    must_exist: bool = False
    must_not_exist: bool = False
    now_ms: int | None = None
    stale_before: int | None = None

    def seen_at(self, now_ms: int, stale_before: int | None) -> Condition:
        """This condition, judged against the record as a reader sees it at `now_ms`."""
        return Condition(self.if_match, self.if_none_match, self.must_exist, self.must_not_exist, now_ms, stale_before)

    def visible(self, current: RecordMeta | None) -> RecordMeta | None:
        """`current`, or None when it has expired at `now_ms`."""
        if current is None or self.now_ms is None:
            return current
        gone = expired_at(current.expires_at, current.modified_at, self.now_ms, self.stale_before)
        return None if gone else current

    def holds(self, current: RecordMeta | None) -> bool:
        """Whether the condition holds for the record as it is now (None: there is none)."""
        current = self.visible(current)
        if current is None:
            return not self.must_exist and self.if_match is None
        if self.must_not_exist:
            return False
        if self.if_match is not None and current.etag not in self.if_match:
            return False
        return self.if_none_match is None or current.etag not in self.if_none_match


@fast_init
@dataclass(frozen=True, slots=True)
class Totals:
    """What a deployment holds: its stores, their records and the bytes of their bodies as stored."""

    stores: int = 0
    records: int = 0
    bytes: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class StoreLookup:
    """How a request names a store: by ID, or by name under an owner (`owner` a username or
    user ID; None: the user of the presented token)."""

    store_id: str | None = None
    owner: str | None = None
    name: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Sighting:
    """Everything a record read is decided on, read at one instant: the row of the presented
    token and its user, the store named, its owner, the caller's grant on it and the record
    as readers see it (a delete by prefix hides it; expiry is the reader's to judge). Each is
    None when missing."""

    token: Token | None
    user: User | None
    store: Store | None
    owner: User | None
    grant: Grant | None
    record: RecordMeta | None


@fast_init
@dataclass(frozen=True, slots=True)
class WriteBasis:
    """What a writer decided to write on, from rows it read earlier: the index writes only if
    all of it still holds when the write commits. `token_hash` None: no token was presented
    (then `token` is None). `grant` is the caller's grant on the store as the writer saw it
    (None: none). `name` is checked when the request named the store by name; the store's
    expiry rules (conditions are judged with them) are always checked."""

    token_hash: str | None
    token: Token | None
    grant: Grant | None
    name: str | None
    record_expiry: RecordExpiry


def expired_at(expires_at: int | None, modified_at: int, now_ms: int, stale_before: int | None) -> bool:
    """Whether a row had expired at `now_ms` (its own expiry, or a store rule: written at or
    before `stale_before`)."""
    if expires_at is not None:
        return expires_at <= now_ms
    return stale_before is not None and modified_at <= stale_before
