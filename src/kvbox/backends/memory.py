"""In-memory reference backend: the contract in its simplest form, used by fast tests.

Rows are immutable, so the index keeps and hands out the same objects; a change stores a
new row in place of the old one.
"""

from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from kvbox.backends.base import BasisChangedError
from kvbox.backends.memory_feed import MemoryFeed
from kvbox.backends.sighting import basis_holds, sight
from kvbox.core.errors import NameNotUniqueError, PreconditionFailedError, StorageError
from kvbox.core.expiry import is_gone
from kvbox.core.feed import EventType, write_events
from kvbox.core.ids import new_blob_name
from kvbox.core.models import (
    Condition,
    GeneralAccess,
    Grant,
    KeyItem,
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
    expired_at,
)
from kvbox.core.sentinels import UNSET, Unset

_PREFIX_END = "\U0010ffff"


def _counted(
    store: Store,
    *,
    writes: int = 0,
    deletes: int = 0,
    reads: int = 0,
    lists: int = 0,
    size: int = 0,
    records: int = 0,
    modified: int = 0,
    accessed: int = 0,
) -> Store:
    """The store with counts added and its times moved forward (never backwards)."""
    s = store.stats
    stats = dataclasses.replace(
        s,
        read_count=s.read_count + reads,
        write_count=s.write_count + writes,
        delete_count=s.delete_count + deletes,
        list_count=s.list_count + lists,
        storage_bytes=s.storage_bytes + size,
    )
    return dataclasses.replace(
        store,
        stats=stats,
        record_count=store.record_count + records,
        modified_at=max(store.modified_at, modified),
        accessed_at=max(store.accessed_at, accessed),
    )


class _StoreRecords:
    def __init__(self) -> None:
        self.rows: dict[str, RecordMeta] = {}
        self.keys: list[str] = []  # sorted by UTF-8 bytes; keys are ASCII so str order matches
        self.seqs: dict[str, int] = {}  # the store's write count after each row's write
        self.deleted: dict[str, int] = {}  # prefix -> write count when it was deleted

    def hidden(self, key: str) -> bool:
        """Whether a deletion by prefix hid the row (written before it, under its prefix)."""
        return any(key.startswith(p) and self.seqs[key] <= seq for p, seq in self.deleted.items())

    def visible_row(self, key: str) -> RecordMeta | None:
        """The row of `key` unless a deletion by prefix hid it (expiry is the caller's)."""
        row = self.rows.get(key)
        return None if row is None or (self.deleted and self.hidden(key)) else row

    def live(self, key: str, visible: Visibility | None) -> bool:
        if self.deleted and self.hidden(key):
            return False
        if visible is None:
            return True
        row = self.rows[key]
        return not is_gone(visible.expiry, key, row.modified_at, row.expires_at, visible.now_ms)

    def drop(self, key: str) -> RecordMeta:
        row = self.rows.pop(key)
        del self.keys[bisect.bisect_left(self.keys, key)]
        del self.seqs[key]
        return row


class MemoryMetadataIndex(MemoryFeed):
    def __init__(self, *, changes: bool = True) -> None:
        super().__init__(changes=changes)
        self._users: dict[str, User] = {}
        self._tokens: dict[str, Token] = {}
        self._stores: dict[str, Store] = {}
        self._records: dict[str, _StoreRecords] = {}
        self._deleted: dict[str, _StoreRecords] = {}
        self._grants: dict[tuple[str, str], Grant] = {}
        self._freed: set[str] = set()
        self._generation = 0
        self._metadata_generation = 0

    async def close(self) -> None:
        return None

    def _has_store(self, store_id: str) -> bool:
        return store_id in self._stores

    async def migrate(self) -> tuple[int, int]:
        """Nothing to set up: there is no schema (version 0)."""
        return 0, 0

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """One process holds the data: every holder may run."""
        yield True

    @property
    def shared_by_nodes(self) -> bool:
        return False

    async def read_record_as(
        self, token_hash: str | None, user_id: str | None, lookup: StoreLookup, key: str
    ) -> Sighting:
        return await sight(self, token_hash, user_id, lookup, key)

    async def put_record_as(
        self, basis: WriteBasis, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None:
        # No await below suspends: the check and the write are one step for every caller.
        token = await self.get_token_by_hash(basis.token_hash) if basis.token_hash is not None else None
        user = await self.get_user(token.user_id) if token is not None else None
        grant = await self.get_grant(store_id, basis.token.user_id) if basis.token is not None else None
        if not basis_holds(basis, await self.get_store(store_id), token, user is not None, grant):
            raise BasisChangedError()
        return await self.put_record(store_id, record, condition=condition)

    def read_generation(self) -> int:
        return self._generation

    def metadata_generation(self) -> int:
        return self._metadata_generation

    # users and tokens
    async def insert_user(self, user: User) -> None:
        self._generation += 1
        self._metadata_generation += 1
        if any(u.username == user.username for u in self._users.values()):
            raise NameNotUniqueError(f"User {user.username!r} already exists.")
        self._users[user.id] = user

    async def get_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def get_user_by_name(self, username: str) -> User | None:
        return next((u for u in self._users.values() if u.username == username), None)

    async def list_users(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: (u.created_at, u.id))

    async def set_user_default_access(self, user_id: str, access: GeneralAccess) -> None:
        self._generation += 1
        self._metadata_generation += 1
        user = self._users.get(user_id)
        if user is not None:
            self._users[user_id] = dataclasses.replace(user, default_general_access=access)

    async def insert_token(self, token: Token) -> None:
        self._generation += 1
        self._metadata_generation += 1
        self._tokens[token.id] = token

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        return next((t for t in self._tokens.values() if t.token_hash == token_hash), None)

    async def list_tokens(self, user_id: str) -> list[Token]:
        return [t for t in self._tokens.values() if t.user_id == user_id]

    async def delete_token(self, token_id: str) -> bool:
        self._generation += 1
        self._metadata_generation += 1
        return self._tokens.pop(token_id, None) is not None

    # stores
    def _name_taken(self, user_id: str, name: str, except_id: str | None = None) -> bool:
        return any(s.user_id == user_id and s.name == name and s.id != except_id for s in self._stores.values())

    async def insert_store(self, store: Store) -> None:
        self._generation += 1
        self._metadata_generation += 1
        if store.name is not None and self._name_taken(store.user_id, store.name):
            raise NameNotUniqueError(f"You already have a key-value store named {store.name!r}.")
        self._stores[store.id] = store
        self._records[store.id] = _StoreRecords()

    async def get_store(self, store_id: str) -> Store | None:
        return self._stores.get(store_id)

    async def get_store_by_name(self, user_id: str, name: str) -> Store | None:
        return next((s for s in self._stores.values() if s.user_id == user_id and s.name == name), None)

    async def update_store(
        self,
        store_id: str,
        *,
        modified_at: int,
        name: str | Unset | None = UNSET,
        general_access: GeneralAccess | Unset = UNSET,
        title: str | Unset | None = UNSET,
    ) -> Store | None:
        self._generation += 1
        self._metadata_generation += 1
        s = self._stores.get(store_id)
        if s is None:
            return None
        changes: dict[str, Any] = {}
        if not isinstance(name, Unset):
            if name is not None and self._name_taken(s.user_id, name, except_id=store_id):
                raise NameNotUniqueError(f"You already have a key-value store named {name!r}.")
            changes["name"] = name
        if not isinstance(general_access, Unset):
            changes["general_access"] = general_access
        if not isinstance(title, Unset):
            changes["title"] = title
        s = _counted(dataclasses.replace(s, **changes), modified=modified_at, accessed=modified_at)
        self._stores[store_id] = s
        return s

    async def delete_store(self, store_id: str, *, expired_before: int | None = None) -> bool:
        self._generation += 1
        self._metadata_generation += 1
        store = self._stores.get(store_id)
        if store is None:
            return False
        if expired_before is not None and (store.name is not None or store.accessed_at >= expired_before):
            return False
        del self._stores[store_id]
        self._deleted[store_id] = self._records.pop(store_id)
        self._drop_feed(store_id)
        for key in [k for k in self._grants if k[0] == store_id]:
            del self._grants[key]
        return True

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
    ) -> StorePage:
        granted = {g.store_id for g in self._grants.values() if g.user_id == user_id} if shared else set()
        matching = [
            s
            for s in self._stores.values()
            if ((owned and s.user_id == user_id) or s.id in granted)
            and (include_unnamed or s.name is not None)
            and (search is None or s.id == search or (s.name or "").lower().startswith(search.lower()))
        ]
        order = {store_id: i for i, store_id in enumerate(self._stores)}
        if by_name:
            matching.sort(
                key=lambda s: (s.name is None, (s.name or "").lower(), s.created_at, order[s.id]), reverse=desc
            )
        else:
            matching.sort(key=lambda s: (s.created_at, order[s.id]), reverse=desc)
        return StorePage(total=len(matching), items=matching[offset : offset + limit])

    async def list_expired_stores(self, *, accessed_before: int, limit: int) -> list[str]:
        expired = [s for s in self._stores.values() if s.name is None and s.accessed_at < accessed_before]
        expired.sort(key=lambda s: (s.accessed_at, s.id))
        return [s.id for s in expired[: max(limit, 0)]]

    # sharing
    async def set_grant(self, grant: Grant) -> None:
        self._generation += 1
        self._metadata_generation += 1
        if grant.store_id in self._stores:
            self._grants[(grant.store_id, grant.user_id)] = grant

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        return self._grants.get((store_id, user_id))

    async def list_grants(self, store_id: str) -> list[Grant]:
        found = [g for (sid, _), g in self._grants.items() if sid == store_id]
        return sorted(found, key=lambda g: (g.created_at, g.user_id))

    async def delete_grant(self, store_id: str, user_id: str) -> bool:
        self._generation += 1
        self._metadata_generation += 1
        return self._grants.pop((store_id, user_id), None) is not None

    async def apply_stats(self, deltas: Mapping[str, StatsDelta]) -> None:
        self._generation += 1
        for store_id, d in deltas.items():
            s = self._stores.get(store_id)
            if s is not None:
                self._stores[store_id] = _counted(s, reads=d.reads, lists=d.lists, accessed=d.accessed_at)

    # records
    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        recs = self._records.get(store_id)
        if recs is None or key not in recs.rows or (recs.deleted and recs.hidden(key)):
            return None
        return recs.rows[key]

    async def put_record(
        self, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None:
        s = self._stores.get(store_id)
        if s is None:
            raise StorageError(f"Store {store_id} does not exist.")
        recs = self._records[store_id]
        old = recs.rows.get(record.key)
        hidden = old is not None and recs.visible_row(record.key) is None
        if condition is not None and not condition.holds(None if hidden else old):
            raise PreconditionFailedError()
        self._generation += 1
        self._append_write(store_id, record, old, hidden, condition)
        if old is None:
            bisect.insort(recs.keys, record.key)
        recs.rows[record.key] = record
        s = _counted(s, writes=1, size=record.size - (old.size if old else 0), records=0 if old else 1,
                     modified=record.modified_at, accessed=record.modified_at)  # fmt: skip
        self._stores[store_id] = s
        recs.seqs[record.key] = s.stats.write_count
        return old

    async def delete_record(
        self, store_id: str, key: str, *, now_ms: int, condition: Condition | None = None
    ) -> RecordMeta | None:
        s = self._stores.get(store_id)
        if s is None:
            return None
        recs = self._records[store_id]
        if condition is not None and not condition.holds(recs.visible_row(key)):
            raise PreconditionFailedError()
        self._generation += 1
        old = recs.drop(key) if key in recs.rows else None
        if old is not None:
            self._append(store_id, EventType.DELETED, key, now_ms)
        # Deleting a missing key still counts as a delete and an access, but modifies nothing.
        self._stores[store_id] = _counted(s, deletes=1, size=-(old.size if old else 0), records=-1 if old else 0,
                                          modified=now_ms if old else 0, accessed=now_ms)  # fmt: skip
        return old

    def _append_write(
        self, store_id: str, record: RecordMeta, old: RecordMeta | None, hidden: bool, condition: Condition | None
    ) -> None:
        now = record.modified_at
        stale = None
        if condition is not None and condition.now_ms is not None:
            now, stale = condition.now_ms, condition.stale_before
        expired = old is not None and expired_at(old.expires_at, old.modified_at, now, stale)
        events = write_events(replaced=old is not None, hidden=hidden, expired=expired)
        for event in events[:-1]:
            self._append(store_id, event, record.key, record.modified_at)
        self._append(store_id, events[-1], record.key, record.modified_at,
                     (record.etag, record.size, record.content_type))  # fmt: skip

    async def list_keys(
        self, store_id: str, *, after: str | None, prefix: str | None, limit: int, visible: Visibility | None = None
    ) -> KeyPage:
        recs = self._records.get(store_id)
        if recs is None:
            return KeyPage(items=[], is_truncated=False)
        items: list[KeyItem] = []
        for key in self._range(recs, after, prefix):
            if not recs.live(key, visible):
                continue
            if len(items) == max(limit, 0):
                return KeyPage(items=items, is_truncated=True)
            r = recs.rows[key]
            items.append(KeyItem(key, r.size, r.content_type, r.modified_at, r.etag, r.expires_at))
        return KeyPage(items=items, is_truncated=False)

    @staticmethod
    def _range(recs: _StoreRecords, after: str | None, prefix: str | None) -> list[str]:
        """The keys after `after` that start with `prefix`, in order."""
        lo = prefix or ""
        if after is not None and after >= lo:
            start = bisect.bisect_right(recs.keys, after)
        else:
            start = bisect.bisect_left(recs.keys, lo)
        hi = bisect.bisect_left(recs.keys, lo + _PREFIX_END) if prefix else len(recs.keys)
        return recs.keys[start:hi]

    # record lifecycle
    async def delete_prefix(self, store_id: str, prefix: str, *, visible: Visibility) -> int | None:
        self._generation += 1
        s = self._stores.get(store_id)
        if s is None:
            return None
        recs = self._records[store_id]
        count = sum(1 for key in self._range(recs, None, prefix or None) if recs.live(key, visible))
        recs.deleted[prefix] = max(recs.deleted.get(prefix, 0), s.stats.write_count)
        self._stores[store_id] = _counted(s, deletes=1, modified=visible.now_ms, accessed=visible.now_ms)
        return count

    def _reclaim(self, store_id: str, keys: list[str], event: str, now_ms: int) -> tuple[int, list[str]]:
        """Delete rows of a store that still exists, each a change `event`; its counters drop."""
        recs = self._records[store_id]
        rows = [recs.drop(key) for key in keys]
        for key in keys:
            self._append(store_id, event, key, now_ms)
        size = sum(r.size for r in rows)
        self._stores[store_id] = _counted(self._stores[store_id], size=-size, records=-len(rows))
        freed = [r.blob_id for r in rows if r.blob_id]
        self._freed.update(freed)
        return len(rows), freed

    async def reclaim_expired(self, *, now_ms: int, max_rows: int) -> tuple[int, list[str]]:
        self._generation += 1
        due = sorted(
            (row.expires_at, store_id, key)
            for store_id, recs in self._records.items()
            for key, row in recs.rows.items()
            if row.expires_at is not None and row.expires_at <= now_ms
        )[: max(max_rows, 0)]
        count, freed = 0, list[str]()
        for store_id in sorted({store_id for _, store_id, _ in due}):
            n, blobs = self._reclaim(
                store_id, [key for _, sid, key in due if sid == store_id], EventType.EXPIRED, now_ms
            )
            count, freed = count + n, freed + blobs
        return count, freed

    async def reclaim_store_expired(
        self, store_id: str, visible: Visibility, *, after: str | None, max_keys: int
    ) -> tuple[int, list[str], str | None]:
        self._generation += 1
        recs = self._records.get(store_id)
        if recs is None:
            return 0, [], None
        window = self._range(recs, after, None)
        last = window[max(max_keys, 1) - 1] if len(window) >= max(max_keys, 1) else None
        window = window[: max(max_keys, 1)]
        rows = recs.rows
        now = visible.now_ms
        gone = [k for k in window if is_gone(visible.expiry, k, rows[k].modified_at, rows[k].expires_at, now)]
        count, freed = self._reclaim(store_id, gone, EventType.EXPIRED, now)
        return count, freed, last

    async def list_expiring_stores(self, *, after: str | None, limit: int) -> list[str]:
        ids = sorted(
            s.id
            for s in self._stores.values()
            if (s.record_expiry.rules or s.record_expiry.retired) and s.id > (after or "")
        )
        return ids[: max(limit, 0)]

    async def update_record_expiry(
        self, store_id: str, change: Callable[[RecordExpiry], RecordExpiry], *, modified_at: int | None = None
    ) -> Store | None:
        self._generation += 1
        self._metadata_generation += 1
        s = self._stores.get(store_id)
        if s is None:
            return None
        s = dataclasses.replace(s, record_expiry=change(s.record_expiry))
        if modified_at is not None:
            s = _counted(s, modified=modified_at, accessed=modified_at)
        self._stores[store_id] = s
        return s

    # housekeeping
    async def purge_deleted(self, *, max_rows: int) -> list[str]:
        self._generation += 1
        freed: list[str] = []
        for store_id in list(self._deleted):
            recs = self._deleted[store_id]
            while recs.rows and len(freed) < max_rows:
                _, row = recs.rows.popitem()
                if row.blob_id:
                    freed.append(row.blob_id)
                    self._freed.add(row.blob_id)
            if not recs.rows:
                del self._deleted[store_id]
            if len(freed) >= max_rows:
                break
        budget = max_rows - len(freed)
        for store_id, recs in self._records.items():
            for prefix, seq in list(recs.deleted.items()):
                victims = [k for k in self._range(recs, None, prefix or None) if recs.seqs[k] <= seq]
                taken, blobs = self._reclaim(store_id, victims[: max(budget, 0)], EventType.DELETED, _now_ms())
                budget -= taken
                freed += blobs
                if taken == len(victims):
                    del recs.deleted[prefix]
        return freed

    async def freed_blobs(self, *, limit: int) -> list[str]:
        return sorted(self._freed)[: max(limit, 0)]

    async def forget_freed_blobs(self, blob_ids: list[str]) -> None:
        self._freed.difference_update(blob_ids)

    async def purge_pending(self) -> bool:
        return bool(self._deleted) or any(recs.deleted for recs in self._records.values())

    async def referenced_blob_ids(self, blob_ids: list[str]) -> set[str]:
        wanted = set(blob_ids)
        found: set[str] = set()
        for recs in (*self._records.values(), *self._deleted.values()):
            for row in recs.rows.values():
                if row.blob_id in wanted:
                    found.add(row.blob_id)
        return found

    # operations
    async def ping(self) -> None:
        return None

    async def totals(self) -> Totals:
        stores = self._stores.values()
        return Totals(len(stores), sum(s.record_count for s in stores), sum(s.stats.storage_bytes for s in stores))

    def group_commit_sizes(self) -> Mapping[int, int]:
        return {}


def _now_ms() -> int:
    # purge_deleted takes no clock: a deleted prefix's rows change at the time they go.
    return time.time_ns() // 1_000_000


class _MemoryBlobWriter:
    def __init__(self, store: MemoryBlobStore) -> None:
        self._store = store
        self._parts: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self._parts.append(bytes(data))

    async def commit(self) -> str:
        blob_id = new_blob_name()
        self._store.blobs[blob_id] = b"".join(self._parts)
        self._store.stamps[blob_id] = int(time.time() * 1000)
        return blob_id

    async def abort(self) -> None:
        self._parts.clear()


class MemoryBlobStore:
    def __init__(self, chunk_size: int = 256 * 1024) -> None:
        self.blobs: dict[str, bytes] = {}
        self.stamps: dict[str, int] = {}  # commit times, for orphan collection's age limit
        self._chunk = chunk_size

    async def create(self) -> _MemoryBlobWriter:
        return _MemoryBlobWriter(self)

    async def open(self, blob_id: str, *, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        data = self.blobs.get(blob_id)
        if data is None:
            raise StorageError(f"Blob {blob_id} is missing.")
        return self._chunks(memoryview(data)[start:end])

    async def _chunks(self, data: memoryview) -> AsyncGenerator[bytes, None]:
        for i in range(0, len(data), self._chunk):
            yield bytes(data[i : i + self._chunk])

    async def delete(self, blob_id: str) -> None:
        self.blobs.pop(blob_id, None)
        self.stamps.pop(blob_id, None)

    async def list_ids(self, *, older_than_ms: int) -> AsyncIterator[str]:
        for blob_id in list(self.blobs):
            if self.stamps.get(blob_id, 0) < older_than_ms:
                yield blob_id

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
