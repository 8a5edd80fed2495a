"""The two narrow contracts every backend implements: a metadata index and a blob store.

The index holds users, tokens, stores and one row per record; it deals in rows and never
interprets record bodies. The blob store holds bodies too large to keep inline, under
opaque names that never derive from a key. Each index method is one atomic transaction:
callers never see half of a change.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from kvbox.core.feed import ChangePage
from kvbox.core.models import (
    Condition,
    GeneralAccess,
    Grant,
    KeyPage,
    RecordExpiry,
    RecordMeta,
    Sighting,
    StatsDelta,
    Store,
    StoreLookup,
    StorePage,
    Token,
    Totals,
    User,
    Visibility,
    WriteBasis,
)
from kvbox.core.sentinels import UNSET, Unset
from kvbox.core.webhooks import Attempt, Delivery, Webhook


class BasisChangedError(Exception):
    """`put_record_as` wrote nothing: a row its `WriteBasis` names changed (or the store is
    gone). The caller decides again from fresh rows. Never reaches a client."""


class MetadataIndex(Protocol):
    """Users, tokens, stores and record rows.

    Contract notes:
    - `insert_user` raises `NameNotUniqueError` for a taken username; `insert_store` and
      `update_store` raise it for a name the owner already uses.
    - `put_record` replaces any row with the same key and returns the replaced row (or None);
      in the same transaction it adds 1 to the store's write count, adjusts its storage bytes
      and record count, and sets its modified and accessed times.
    - `delete_record` of a missing key is a no-op that returns None; otherwise it returns the
      deleted row. Either way it counts one delete.
    - With a `condition`, `put_record` and `delete_record` first check it against the record
      as it is, in the same atomic step as the change (across processes and nodes: of two
      writers racing with the same `If-Match`, exactly one wins). When it does not hold they
      raise `PreconditionFailedError` and change nothing, counters included.
    - `delete_store` hides the store and all its records at once; the rows are reclaimed
      later by `purge_deleted`, which returns the blob ids that are no longer referenced.
    - `list_stores` lists stores owned by the user (`owned`), shared with the user through a
      grant (`shared`), or both; `total` counts all matches. They come oldest first, or with
      `by_name` by name (case-insensitive; unnamed stores after named ones, then oldest first);
      `desc` reverses either order. `search` keeps the stores whose name starts with it
      (case-insensitive) or whose ID is exactly it. Both are served by an index on the
      owner and the folded name, never by reading all of the user's stores.
    - `delete_store` also removes the store's grants. With `expired_before` it deletes only an
      unnamed store last accessed before that time, checked in the same transaction.
    - `set_grant` replaces the user's grant on the store.
    - `list_expired_stores` returns IDs of unnamed stores last accessed before the cutoff.
    - `list_keys` returns keys strictly greater than `after` that start with `prefix`, in
      UTF-8 byte order, at most `limit` of them, and says whether more follow. With `visible`
      it leaves out the records expired then (core/expiry.py's `is_gone`), without it none.
    - `put_record` stores the record's own `expires_at` with it; records never expire inside
      the index: readers apply `is_gone`, and the sweeper calls the `reclaim_*` methods.
    - `delete_prefix` counts the records under `prefix` visible at one instant, then hides
      at once every record written up to that instant under the prefix (later writes stay);
      `get_record` and `list_keys` never return a hidden row. The rows are reclaimed later
      by `purge_deleted` (with `purge_pending` true until then), which takes them off the
      store's record count and storage bytes. Returns None when the store does not exist.
    - `reclaim_expired` deletes up to `max_rows` rows whose own expiry is at or before
      `now_ms`, found through an index on the expiry time; `reclaim_store_expired` walks at
      most `max_keys` keys of one store after `after` and deletes the rows `visible` no
      longer shows, returning the last key walked (None at the end of the store). Both take
      the rows off their store's counters and return (rows deleted, blob ids freed).
    - `list_expiring_stores` lists, by ID after `after`, the stores with expiry rules in
      force or retired.
    - The blob ids that `purge_deleted` and the `reclaim_*` methods return stay listed by
      `freed_blobs` until `forget_freed_blobs`, which the caller calls once it has deleted
      them: a crash in between loses none.
    - `update_record_expiry` replaces a store's expiry with `change(current)` in one
      transaction (a `change` that raises changes nothing); with `modified_at` it also moves
      the store's modified and accessed times.

    Change feed (unless the index was opened with `changes=False`, when it records none):
    - every record change appends to the store's change log in the same transaction, with
      the store's next sequence (1, 2, 3, ... per store, never reused, committed in order):
      `put_record` appends RECORD.CREATED, or RECORD.UPDATED when it replaced a row readers
      saw, or first RECORD.DELETED (a row a delete by prefix hid) or RECORD.EXPIRED (a row
      that had expired at the write's `modified_at`, or by the condition's `now_ms` and
      `stale_before`) and then RECORD.CREATED; `delete_record` appends RECORD.DELETED when it
      removed a row; `purge_deleted` appends RECORD.DELETED for each row of a deleted prefix
      it removes, the `reclaim_*` methods RECORD.EXPIRED for each row. Deleted stores'
      changes go with them.
    - `list_changes` returns up to `limit` changes after `after` in order, with the oldest
      sequence still kept and the latest; None when the store does not exist.
    - `trim_changes` deletes up to `max_rows` changes made before `before_ms`.
    - `watch_changes` runs until cancelled, calling `on_change(store_id)` soon (well within a
      second) after any process commits a change (None: some store, not said which). Calls
      may be spurious; it never busy-waits.

    Webhooks:
    - `insert_webhook` stores a webhook whose cursor starts at the store's latest sequence
      and returns it (None: no such store); `update_webhook` replaces it with
      `change(current)`, and moves the cursor to the latest sequence when it turns enabled;
      deleting a webhook or its store deletes its deliveries and delivery log.
    - `webhooks_due` lists enabled webhooks with work (changes after their cursor, or a
      pending delivery due at `now_ms`) whose lease is free at `now_ms`.
    - `claim_webhook` takes (or renews) a webhook's lease for `owner` until `until_ms` when it
      is free or already the owner's; returns whether it did. `release_webhook` frees it.
    - `enqueue_deliveries` persists deliveries and moves the cursor to `cursor`, in one
      transaction; `next_delivery` is the pending delivery of lowest sequence.
    - `record_attempt` logs an attempt and either schedules the delivery's next attempt at
      `next_attempt_at` or (None) ends it; the log keeps the webhook's last 100 attempts,
      which `list_attempts` returns newest first after the pending deliveries.
    """

    async def close(self) -> None: ...

    # schema and coordination
    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema (`kvbox migrate`); returns (version found, version now).

        Safe to run from several processes at once and on a current schema. An index that
        migrates itself when it opens, or has no schema, reports the version it has now twice.
        """
        ...

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold the lock `name` for a block, shared by every process on the same data; yields
        whether this process got it (when False, another one holds it: skip the work).

        An index that has no such lock (the in-memory one, which one process holds) yields
        True to every holder; work run under the lock must be idempotent all the same, as a
        holder may die half-way.
        """
        ...

    # change detection, for readers that reuse rows across requests
    def read_generation(self) -> int:
        """A value that changes whenever anything in the index changes, in any process.

        Cheap enough to call before every read. An index that cannot tell cheaply returns a
        new value on every call, so readers never reuse a row.
        """
        ...

    def metadata_generation(self) -> int:
        """Like `read_generation`, for users, tokens, stores and grants only: record writes
        and the counters they move (a store's stats and record count) may leave it alone."""
        ...

    @property
    def shared_by_nodes(self) -> bool:
        """True when other nodes change the index and only a query tells (its generations
        change on every call): the record path then reads and writes with `read_record_as`
        and `put_record_as`, one round trip each, instead of reusing rows."""
        ...

    # the record path in one round trip
    async def read_record_as(
        self, token_hash: str | None, user_id: str | None, lookup: StoreLookup, key: str
    ) -> Sighting:
        """The rows a record read is decided on (see `Sighting`), at one instant. The caller is
        the user of the token with `token_hash`, or (no token) the user `user_id`, or nobody."""
        ...

    async def put_record_as(
        self, basis: WriteBasis, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None:
        """`put_record`, in the same atomic step as a check that `basis` still holds: the token
        row found by its hash is `basis.token` (its user still exists), the caller's grant
        on the store is `basis.grant`, and the store exists with `basis.name` (when given)
        and `basis.record_expiry`. Raises `BasisChangedError` and writes nothing otherwise."""
        ...

    # users and tokens
    async def insert_user(self, user: User) -> None: ...
    async def get_user(self, user_id: str) -> User | None: ...
    async def get_user_by_name(self, username: str) -> User | None: ...
    async def list_users(self) -> list[User]: ...
    async def set_user_default_access(self, user_id: str, access: GeneralAccess) -> None: ...
    async def insert_token(self, token: Token) -> None: ...
    async def get_token_by_hash(self, token_hash: str) -> Token | None: ...
    async def list_tokens(self, user_id: str) -> list[Token]: ...
    async def delete_token(self, token_id: str) -> bool: ...

    # stores
    async def insert_store(self, store: Store) -> None: ...
    async def get_store(self, store_id: str) -> Store | None: ...
    async def get_store_by_name(self, user_id: str, name: str) -> Store | None: ...
    async def update_store(
        self,
        store_id: str,
        *,
        modified_at: int,
        name: str | Unset | None = UNSET,
        general_access: GeneralAccess | Unset = UNSET,
        title: str | Unset | None = UNSET,
    ) -> Store | None: ...
    async def delete_store(self, store_id: str, *, expired_before: int | None = None) -> bool: ...
    async def list_stores(
        self,
        user_id: str,
        *,
        include_unnamed: bool,
        offset: int,
        limit: int,
        desc: bool,
        owned: bool = True,
        shared: bool = False,
        by_name: bool = False,
        search: str | None = None,
    ) -> StorePage: ...
    async def list_expired_stores(self, *, accessed_before: int, limit: int) -> list[str]: ...

    # sharing
    async def set_grant(self, grant: Grant) -> None: ...
    async def get_grant(self, store_id: str, user_id: str) -> Grant | None: ...
    async def list_grants(self, store_id: str) -> list[Grant]: ...
    async def delete_grant(self, store_id: str, user_id: str) -> bool: ...
    async def apply_stats(self, deltas: Mapping[str, StatsDelta]) -> None: ...

    # records
    async def get_record(self, store_id: str, key: str) -> RecordMeta | None: ...
    async def put_record(
        self, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None: ...
    async def delete_record(
        self, store_id: str, key: str, *, now_ms: int, condition: Condition | None = None
    ) -> RecordMeta | None: ...
    async def list_keys(
        self, store_id: str, *, after: str | None, prefix: str | None, limit: int, visible: Visibility | None = None
    ) -> KeyPage: ...

    # record lifecycle
    async def delete_prefix(self, store_id: str, prefix: str, *, visible: Visibility) -> int | None: ...
    async def reclaim_expired(self, *, now_ms: int, max_rows: int) -> tuple[int, list[str]]: ...
    async def reclaim_store_expired(
        self, store_id: str, visible: Visibility, *, after: str | None, max_keys: int
    ) -> tuple[int, list[str], str | None]: ...
    async def list_expiring_stores(self, *, after: str | None, limit: int) -> list[str]: ...
    async def update_record_expiry(
        self, store_id: str, change: Callable[[RecordExpiry], RecordExpiry], *, modified_at: int | None = None
    ) -> Store | None: ...

    # change feed
    async def list_changes(self, store_id: str, *, after: int, limit: int) -> ChangePage | None: ...
    async def trim_changes(self, *, before_ms: int, max_rows: int) -> int: ...
    async def watch_changes(self, on_change: Callable[[str | None], None]) -> None: ...

    # webhooks
    async def insert_webhook(self, webhook: Webhook) -> Webhook | None: ...
    async def get_webhook(self, store_id: str, webhook_id: str) -> Webhook | None: ...
    async def list_webhooks(self, store_id: str) -> list[Webhook]: ...
    async def update_webhook(
        self, store_id: str, webhook_id: str, change: Callable[[Webhook], Webhook]
    ) -> Webhook | None: ...
    async def delete_webhook(self, store_id: str, webhook_id: str) -> bool: ...
    async def webhooks_due(self, *, now_ms: int, limit: int) -> list[Webhook]: ...
    async def claim_webhook(self, webhook_id: str, *, owner: str, now_ms: int, until_ms: int) -> bool: ...
    async def release_webhook(self, webhook_id: str, *, owner: str) -> None: ...
    async def enqueue_deliveries(self, webhook_id: str, deliveries: list[Delivery], *, cursor: int) -> None: ...
    async def next_delivery(self, webhook_id: str) -> Delivery | None: ...
    async def record_attempt(self, attempt: Attempt, *, next_attempt_at: int | None) -> None: ...
    async def list_attempts(self, webhook_id: str, *, limit: int) -> list[Attempt]: ...

    # housekeeping
    async def purge_deleted(self, *, max_rows: int) -> list[str]: ...
    async def purge_pending(self) -> bool: ...
    async def freed_blobs(self, *, limit: int) -> list[str]: ...
    async def forget_freed_blobs(self, blob_ids: list[str]) -> None: ...
    async def referenced_blob_ids(self, blob_ids: list[str]) -> set[str]: ...

    # operations
    async def ping(self) -> None:
        """Answer one trivial query; raise `StorageError` when the index cannot (readiness)."""
        ...

    async def totals(self) -> Totals:
        """Stores, records and stored bytes of the whole deployment (metrics), from the
        stores' counters: one cheap query, never a scan of the records."""
        ...

    def group_commit_sizes(self) -> Mapping[int, int]:
        """How many writes each group commit of this process carried so far, as batch
        size -> number of commits (metrics). Empty for an index that commits one by one."""
        ...


class BlobWriter(Protocol):
    """One body being written. Nothing is visible under the returned id until `commit`."""

    async def write(self, data: bytes) -> None: ...
    async def commit(self) -> str: ...
    async def abort(self) -> None: ...


class BlobStore(Protocol):
    """Bodies by opaque id. Deleting a missing blob is a no-op; opening one raises `StorageError`.

    `open` starts the read before it returns: a body being streamed stays readable even when
    a newer write replaces and deletes the blob meanwhile. A reader that stops early closes
    the body (`aclose()`), which releases its file or connection at once.

    `open(blob_id, start=S, end=E)` streams only bytes S up to, not including, E (E None:
    to the end; an E past the end stops at the end), reading no byte before S: a range
    from the middle of a large body costs what the range costs, in time and memory.
    """

    async def create(self) -> BlobWriter: ...
    async def open(self, blob_id: str, *, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]: ...
    async def delete(self, blob_id: str) -> None: ...
    def list_ids(self, *, older_than_ms: int) -> AsyncIterator[str]: ...
    async def ping(self) -> None:
        """Prove the store takes writes (a file written and removed) or answers (the bucket);
        raise `StorageError` when it does not (readiness)."""
        ...

    async def close(self) -> None: ...
