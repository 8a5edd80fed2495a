"""The embedded metadata index: users, tokens, stores and record rows in one SQLite file.

Several processes (server workers) may open the same file. Every write is its own
`BEGIN IMMEDIATE` transaction and every read sees the latest commit of any process.
The sqlite calls run inline on the event loop: they are short point queries and range
scans, cheaper than a hop to a worker thread.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

from kvbox.backends.base import BasisChangedError
from kvbox.backends.failures import storage_failure
from kvbox.backends.rows import RECORD_COLUMNS as _RECORD
from kvbox.backends.rows import (
    expiry_from_json,
    expiry_json,
    grant_values,
    key_page,
    record_values,
    store_values,
    token_values,
    user_values,
)
from kvbox.backends.rows import grant_from_row as _grant
from kvbox.backends.rows import record_from_row as _record
from kvbox.backends.rows import store_from_row as _store
from kvbox.backends.rows import token_from_row as _token
from kvbox.backends.rows import user_from_row as _user
from kvbox.backends.sighting import basis_holds, sight
from kvbox.backends.sqlite.checkpoint import Checkpointer
from kvbox.backends.sqlite.feed import SqliteFeed, append_change, apply_change_seqs, drop_store_feed
from kvbox.backends.sqlite.reads import TurnReads
from kvbox.backends.sqlite.schema import FOLDED_NAME, SCHEMA_VERSION, migrate
from kvbox.backends.sqlite.walindex import WalIndexWatch
from kvbox.backends.sqlite.writer import Batch, LoopWriter, Refused, tune
from kvbox.backends.statements import PREFIX_END, UNDER_DELETED_PREFIX, Dialect, Statements
from kvbox.core.errors import NameNotUniqueError, PreconditionFailedError, StorageError
from kvbox.core.feed import EventType, write_events
from kvbox.core.models import (
    NO_EXPIRY,
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
    expired_at,
)
from kvbox.core.pacing import Pacer
from kvbox.core.sentinels import UNSET, Unset

BUSY_TIMEOUT_S = 30.0
_IN_CHUNK = 500  # well below SQLite's bound-parameter limit
_PURGE_STEP = 100  # rows of deleted prefixes per write transaction

_SQL = Statements(Dialect(param="?", greatest="max", token_order="rowid", folded_name=FOLDED_NAME))
# `get_record` for many keys of one store, given as a JSON array (`_read_records`). Left to
# itself, SQLite walks the listing index, whose entries are several times wider than those of
# `records_key`: on a store of 10,000,000 records that cost 10-25% more per key.
_GET_RECORDS = (
    f"SELECT {_RECORD} FROM records INDEXED BY records_key WHERE store_pk = {_SQL.store_pk} "
    f"AND key IN (SELECT value FROM json_each(?)) AND NOT {UNDER_DELETED_PREFIX}"
)
# Record writes run on the group-commit writer as separate statements: SQLite has no
# stored functions, and the writer's transaction already serializes them.
_INSERT_RECORD = (
    f"INSERT INTO records (store_pk, {_RECORD}, seq) VALUES (?, {', '.join('?' * len(_RECORD.split(', ')))}, ?)"
)
# A write's look at the record it replaces goes through the listing index, whose entry the
# update rewrites anyway, and the update then finds the row by rowid: `records_key`, whose
# columns an update never changes, stays untouched. Through `records_key`, a write in a store
# of 10,000,000 records read three B-tree leaves that the cache rarely holds instead of two:
# 26.5 against 22.8 µs a write in SQLite alone, 8.5 against 5.4 reads from the OS.
_OLD_RECORD = f"SELECT rowid, {_RECORD} FROM records INDEXED BY records_listing WHERE store_pk = ? AND key = ?"
_UPDATE_RECORD = f"UPDATE records SET {', '.join(f'{c} = ?' for c in _RECORD.split(', ')[1:])}, seq = ? WHERE rowid = ?"
# The rows of deleted prefixes, by rowid: CROSS JOIN walks the few deletions and probes each
# one's key range by index, as purge_deleted does for deleted stores.
_PREFIX_VICTIMS = (
    "SELECT r.rowid FROM deleted_prefixes AS d CROSS JOIN records AS r ON r.store_pk = d.store_pk "
    "AND r.key >= d.prefix AND r.key < d.prefix_end AND r.seq <= d.seq LIMIT ?"
)


def _name_clash(error: sqlite3.IntegrityError, column: str) -> bool:
    # sqlite3 exposes no constraint name; the message lists the columns of the violated index.
    return column in str(error)


def _store_name_taken(name: object) -> NameNotUniqueError:
    return NameNotUniqueError(f"You already have a key-value store named {name!r}.")


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Re-raise database failures and undecodable rows as `StorageError`, cause chained."""
    try:
        yield
    except (sqlite3.Error, ValueError, TypeError) as e:
        raise storage_failure(f"The SQLite index failed to {action}: {e}", e) from e


def _enter_wal(conn: sqlite3.Connection) -> str:
    """Switch the file to WAL and return the journal mode it is in.

    Processes opening a new file at once each hold a shared lock while one of them asks for
    the exclusive lock the switch needs. SQLite answers such a deadlock with "database is
    locked" at once, without its busy handler, so the switch is retried here until the
    busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _count(
    batch: Batch,
    pk: int,
    *,
    writes: int = 0,
    deletes: int = 0,
    size: int = 0,
    records: int = 0,
    modified: int = 0,
    accessed: int = 0,
) -> None:
    """Add one record write or delete to the store's counters for this batch."""
    counts = batch.setdefault("stores", {}).setdefault(pk, [0, 0, 0, 0, 0, 0])
    counts[0] += writes
    counts[1] += deletes
    counts[2] += size
    counts[3] += records
    counts[4] = max(counts[4], modified)
    counts[5] = max(counts[5], accessed)


def _keep_freed(conn: sqlite3.Connection, blob_ids: list[str]) -> list[str]:
    """Note the blobs of rows this transaction deletes (see `freed_blobs`); returns them."""
    if blob_ids:
        conn.executemany("INSERT OR IGNORE INTO freed_blobs (blob_id) VALUES (?)", [(b,) for b in blob_ids])
    return blob_ids


def _apply_store_counts(conn: sqlite3.Connection, batch: Batch) -> None:
    """One UPDATE per store per group commit instead of one per record write."""
    rows = [(w, d, size, n, mod, acc, pk) for pk, (w, d, size, n, mod, acc) in batch.get("stores", {}).items()]
    if rows:
        conn.executemany(
            "UPDATE stores SET write_count = write_count + ?, delete_count = delete_count + ?, "
            "storage_bytes = storage_bytes + ?, record_count = record_count + ?, "
            "modified_at = max(modified_at, ?), accessed_at = max(accessed_at, ?) WHERE pk = ?",
            rows,
        )


def _before_commit(conn: sqlite3.Connection, batch: Batch) -> None:
    _apply_store_counts(conn, batch)
    apply_change_seqs(conn, batch)


class SqliteMetadataIndex(SqliteFeed):
    """`MetadataIndex` over one SQLite database file, created and migrated on open. With
    `changes=False` record changes are not logged (the change feed is off)."""

    def __init__(self, path: Path, *, durable: bool = False, changes: bool = True) -> None:
        self.path = path
        self._changes_on = changes
        with _storage_errors("open the database"):
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                mode = _enter_wal(conn)
                if str(mode).lower() != "wal":
                    raise StorageError(f"SQLite refused WAL mode for {path} (got {mode!r}).")
                tune(conn, durable=durable)
                migrate(conn)
            except BaseException:
                conn.close()
                raise
        self._conn = conn
        self._local_writes = 0
        self._wal_watch = WalIndexWatch.open(path)
        self._checkpointer = Checkpointer(path)
        self._purge_pacer = Pacer(_PURGE_STEP)
        self._point_reads = TurnReads()
        # Hot writes are group-committed on the event loop without blocking it (see writer.py).
        self._writer = LoopWriter(path, durable=durable, busy_timeout_s=BUSY_TIMEOUT_S, before_commit=_before_commit)

    def _storage(self, action: str) -> AbstractContextManager[None]:
        return _storage_errors(action)

    async def close(self) -> None:
        self._wal_watch = None  # SQLite's mapping it reads goes with the connection
        self._writer.close()
        self._checkpointer.close()
        self._conn.close()

    async def migrate(self) -> tuple[int, int]:
        """The schema was brought up to date when the file was opened: report its version."""
        return SCHEMA_VERSION, SCHEMA_VERSION

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """An advisory lock on a file beside the database, taken without waiting: one process
        (and one holder in it) at a time runs the work. The kernel releases it when a holder
        dies."""
        lock_path = self.path.with_name(f"{self.path.name}.{re.sub(r'[^A-Za-z0-9_-]', '_', name)}.lock")
        with _storage_errors("take a lock"):
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)  # closing the descriptor drops the lock

    @property
    def shared_by_nodes(self) -> bool:
        return False

    def read_generation(self) -> int:
        """Changes whenever any process commits to the database (readers reuse rows until then).
        Read from the WAL index's header in memory, on every request: see walindex.py."""
        if self._wal_watch is not None:
            return self._wal_watch.changes() << 32 | self._local_writes
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return int(version) << 32 | self._local_writes

    def metadata_generation(self) -> int:
        """Changes whenever any process changes a user, token, store or grant. Record writes and
        counters go through the group-commit writer and leave it alone."""
        return int(self._conn.execute("SELECT value FROM metadata_generation").fetchone()[0])

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; commits when the block ends, rolls back when it raises."""
        # data_version does not move for this connection's own commits: count them here.
        self._local_writes += 1
        with _storage_errors(action):
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("UPDATE metadata_generation SET value = value + 1")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _snapshot(self, action: str) -> Iterator[sqlite3.Connection]:
        """One read transaction, for reads that must agree with each other."""
        with _storage_errors(action):
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    # users and tokens
    async def insert_user(self, user: User) -> None:
        with self._write("insert a user") as conn:
            try:
                conn.execute(_SQL.insert_user, user_values(user))
            except sqlite3.IntegrityError as e:
                if _name_clash(e, "users.username"):
                    raise NameNotUniqueError(f"User {user.username!r} already exists.") from e
                raise

    async def get_user(self, user_id: str) -> User | None:
        with _storage_errors("read a user"):
            row = self._conn.execute(_SQL.get_user, (user_id,)).fetchone()
            return _user(row) if row else None

    async def get_user_by_name(self, username: str) -> User | None:
        with _storage_errors("read a user"):
            row = self._conn.execute(_SQL.get_user_by_name, (username,)).fetchone()
            return _user(row) if row else None

    async def list_users(self) -> list[User]:
        with _storage_errors("list users"):
            rows = self._conn.execute(_SQL.list_users).fetchall()
            return [_user(r) for r in rows]

    async def set_user_default_access(self, user_id: str, access: GeneralAccess) -> None:
        with self._write("update a user") as conn:
            conn.execute(_SQL.set_user_default_access, (access.value, user_id))

    async def insert_token(self, token: Token) -> None:
        with self._write("insert a token") as conn:
            conn.execute(_SQL.insert_token, token_values(token))

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        with _storage_errors("read a token"):
            row = self._conn.execute(_SQL.get_token_by_hash, (token_hash,)).fetchone()
            return _token(row) if row else None

    async def list_tokens(self, user_id: str) -> list[Token]:
        with _storage_errors("list tokens"):
            return [_token(r) for r in self._conn.execute(_SQL.list_tokens, (user_id,)).fetchall()]

    async def delete_token(self, token_id: str) -> bool:
        with self._write("delete a token") as conn:
            return bool(conn.execute(_SQL.delete_token, (token_id,)).fetchall())

    # stores
    async def insert_store(self, store: Store) -> None:
        with self._write("insert a store") as conn:
            try:
                conn.execute(_SQL.insert_store, store_values(store))
            except sqlite3.IntegrityError as e:
                if _name_clash(e, "stores.name"):
                    raise _store_name_taken(store.name) from e
                raise

    async def get_store(self, store_id: str) -> Store | None:
        with _storage_errors("read a store"):
            row = self._conn.execute(_SQL.get_store, (store_id,)).fetchone()
            return _store(row) if row else None

    async def get_store_by_name(self, user_id: str, name: str) -> Store | None:
        with _storage_errors("read a store"):
            row = self._conn.execute(_SQL.get_store_by_name, (user_id, name)).fetchone()
            return _store(row) if row else None

    async def update_store(
        self,
        store_id: str,
        *,
        modified_at: int,
        name: str | Unset | None = UNSET,
        general_access: GeneralAccess | Unset = UNSET,
        title: str | Unset | None = UNSET,
    ) -> Store | None:
        sql, params = _SQL.update_store(
            store_id, modified_at=modified_at, name=name, general_access=general_access, title=title
        )
        with self._write("update a store") as conn:
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.IntegrityError as e:
                if _name_clash(e, "stores.name"):
                    raise _store_name_taken(name) from e
                raise
            return _store(rows[0]) if rows else None

    async def delete_store(self, store_id: str, *, expired_before: int | None = None) -> bool:
        where, params = _SQL.deletable_store(store_id, expired_before=expired_before)
        with self._write("delete a store") as conn:
            # SQLite has no data-modifying CTE: the row, its marker and its grants go one by one.
            rows = conn.execute(f"DELETE FROM stores WHERE {where} RETURNING pk", params).fetchall()
            if not rows:
                return False
            # The records stay behind, unreachable without the store row, until purge_deleted.
            conn.execute("INSERT INTO deleted_stores VALUES (?, ?)", (rows[0][0], store_id))
            conn.execute("DELETE FROM grants WHERE store_id = ?", (store_id,))
            drop_store_feed(conn, store_id)
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
        listed = _SQL.listed_stores(user_id, owned=owned, shared=shared, include_unnamed=include_unnamed, search=search)
        if listed is None:
            return StorePage(total=0, items=[])
        where, params = listed
        # The count and the page come from one read transaction, so they agree.
        with self._snapshot("list stores") as conn:
            total = conn.execute(_SQL.count_stores(where), params).fetchone()[0]
            page_sql = _SQL.store_page(where, desc=desc, by_name=by_name)
            rows = conn.execute(page_sql, (*params, max(limit, 0), max(offset, 0))).fetchall()
            return StorePage(total=total, items=[_store(r) for r in rows])

    async def list_expired_stores(self, *, accessed_before: int, limit: int) -> list[str]:
        with _storage_errors("list expired stores"):
            rows = self._conn.execute(_SQL.list_expired_stores, (accessed_before, max(limit, 0))).fetchall()
            return [r[0] for r in rows]

    # sharing
    async def set_grant(self, grant: Grant) -> None:
        with self._write("share a store") as conn:
            conn.execute(_SQL.set_grant, (*grant_values(grant), grant.store_id))

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        with _storage_errors("read a grant"):
            row = self._conn.execute(_SQL.get_grant, (store_id, user_id)).fetchone()
            return _grant(row) if row else None

    async def list_grants(self, store_id: str) -> list[Grant]:
        with _storage_errors("list grants"):
            return [_grant(r) for r in self._conn.execute(_SQL.list_grants, (store_id,)).fetchall()]

    async def delete_grant(self, store_id: str, user_id: str) -> bool:
        with self._write("unshare a store") as conn:
            return bool(conn.execute(_SQL.delete_grant, (store_id, user_id)).fetchall())

    async def apply_stats(self, deltas: Mapping[str, StatsDelta]) -> None:
        if not deltas:
            return
        params = [(d.reads, d.lists, d.accessed_at, store_id) for store_id, d in deltas.items()]

        # One batched UPDATE on the group-commit writer; PostgreSQL locks the rows in order first.
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            conn.executemany(
                "UPDATE stores SET read_count = read_count + ?, list_count = list_count + ?, "
                "accessed_at = max(accessed_at, ?) WHERE id = ?",
                params,
            )

        await self._writer.run("apply stats", op)

    # records
    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        # A miss of the read cache on a request's path: read after the loop's turn with the
        # turn's other record reads (reads.py).
        return await self._point_reads.run_together(self._read_records, (store_id, key))

    def _read_records(self, wanted: Sequence[tuple[str, str]]) -> list[RecordMeta | None]:
        """The records at (store ID, key) pairs. The keys of one store are read in one
        statement: `sqlite3` lets go of the interpreter's lock at every step of a statement,
        three times for a lookup alone, once a row (and twice more) for many keys at once."""
        if len(wanted) == 1:
            return [self._read_record(*wanted[0])]
        keys: dict[str, list[str]] = {}
        for store_id, key in wanted:
            keys.setdefault(store_id, []).append(key)
        found: dict[tuple[str, str], RecordMeta] = {}
        with _storage_errors("read a record"):
            for store_id, of_store in keys.items():
                rows = self._conn.execute(_GET_RECORDS, (store_id, json.dumps(of_store))).fetchall()
                found.update(((store_id, row[0]), _record(row)) for row in rows)
        return [found.get(pair) for pair in wanted]

    def _read_record(self, store_id: str, key: str) -> RecordMeta | None:
        with _storage_errors("read a record"):
            row = self._conn.execute(_SQL.get_record, (store_id, key)).fetchone()
            return _record(row) if row else None

    async def put_record(
        self, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None:
        return await self._put(store_id, record, condition, None)

    async def read_record_as(
        self, token_hash: str | None, user_id: str | None, lookup: StoreLookup, key: str
    ) -> Sighting:
        return await sight(self, token_hash, user_id, lookup, key)

    async def put_record_as(
        self, basis: WriteBasis, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None:
        def holds(conn: sqlite3.Connection) -> bool:
            # Read inside the writer's transaction, which holds the database's write lock.
            store = conn.execute(_SQL.get_store, (store_id,)).fetchone()
            token = user = grant = None
            if basis.token_hash is not None:
                token = conn.execute(_SQL.get_token_by_hash, (basis.token_hash,)).fetchone()
            if token is not None:
                user = conn.execute(_SQL.get_user, (token[1],)).fetchone()
            if basis.token is not None:
                grant = conn.execute(_SQL.get_grant, (store_id, basis.token.user_id)).fetchone()
            return basis_holds(
                basis,
                _store(store) if store else None,
                _token(token) if token else None,
                user is not None,
                _grant(grant) if grant else None,
            )

        return await self._put(store_id, record, condition, holds)

    async def _put(
        self,
        store_id: str,
        record: RecordMeta,
        condition: Condition | None,
        holds: Callable[[sqlite3.Connection], bool] | None,
    ) -> RecordMeta | None:
        r = record

        def op(conn: sqlite3.Connection, batch: Batch) -> RecordMeta | Refused | None:
            if holds is not None and not holds(conn):
                return Refused(BasisChangedError())
            pk, written, change_seq = _store_row(conn, batch, store_id)
            old_row = conn.execute(_OLD_RECORD, (pk, r.key)).fetchone()
            old = _record(old_row[1:]) if old_row else None
            # Only a pending delete by prefix can hide the row (looked up once per batch).
            hides = (condition is not None or self._changes_on) and _hides(conn, batch, pk)
            seen = old and (_visible_record(conn, pk, r.key) if hides else old)
            # Checked inside the writer's transaction, which holds the database's write lock.
            if condition is not None and not condition.holds(seen):
                return Refused(PreconditionFailedError())
            if self._changes_on:
                _log_write(conn, batch, pk, change_seq, r, old, seen is None, condition)
            _count(batch, pk, writes=1, size=r.size - (old.size if old else 0), records=0 if old else 1,
                   modified=r.modified_at, accessed=r.modified_at)  # fmt: skip
            # The store's write count once this batch commits, up to this write.
            seq = written + batch["stores"][pk][0]
            values = record_values(r)
            if old is None:
                conn.execute(_INSERT_RECORD, (pk, *values, seq))
            else:
                conn.execute(_UPDATE_RECORD, (*values[1:], seq, old_row[0]))
            return old

        return cast(RecordMeta | None, await self._writer.run("write a record", op))

    async def delete_record(
        self, store_id: str, key: str, *, now_ms: int, condition: Condition | None = None
    ) -> RecordMeta | None:
        def op(conn: sqlite3.Connection, batch: Batch) -> RecordMeta | Refused | None:
            found = conn.execute("SELECT pk FROM stores WHERE id = ?", (store_id,)).fetchone()
            if found is None:
                return None
            pk = found[0]
            if condition is not None and not condition.holds(_visible_record(conn, pk, key)):
                return Refused(PreconditionFailedError())
            rows = conn.execute(
                f"DELETE FROM records WHERE store_pk = ? AND key = ? RETURNING {_RECORD}", (pk, key)
            ).fetchall()
            old = _record(rows[0]) if rows else None
            if old is not None and self._changes_on:
                append_change(conn, batch, pk, EventType.DELETED, key, now_ms)
            # Deleting a missing key still counts as a delete and an access, but modifies nothing.
            _count(batch, pk, deletes=1, size=-(old.size if old else 0), records=-1 if old else 0,
                   modified=now_ms if old else 0, accessed=now_ms)  # fmt: skip
            return old

        return cast(RecordMeta | None, await self._writer.run("delete a record", op))

    async def list_keys(
        self, store_id: str, *, after: str | None, prefix: str | None, limit: int, visible: Visibility | None = None
    ) -> KeyPage:
        # The covering index `records_listing` serves it without touching the table. A store
        # with no deletion by prefix waiting (nearly always) skips that check on every row.
        with _storage_errors("list keys"):
            hides = self._conn.execute(_SQL.has_deleted_prefixes, (store_id,)).fetchone() is not None
            sql, params = _SQL.list_keys(
                store_id, after=after, prefix=prefix, limit=limit, visible=visible, deleted_prefixes=hides
            )
            rows = self._conn.execute(sql, params).fetchall()
        return key_page(rows, limit)

    # record lifecycle
    async def delete_prefix(self, store_id: str, prefix: str, *, visible: Visibility) -> int | None:
        """Count the visible records under `prefix` on a snapshot (in a thread, on a connection
        of its own: a large count must not stall the event loop), then hide the rows written up
        to that snapshot in one short write."""
        counted = await asyncio.to_thread(self._count_prefix, store_id, prefix, visible)
        if counted is None:
            return None
        pk, seq, count = counted

        def op(conn: sqlite3.Connection, batch: Batch) -> int | None:
            found = conn.execute("SELECT pk FROM stores WHERE id = ?", (store_id,)).fetchone()
            if found is None or found[0] != pk:
                return None
            conn.execute(_SQL.mark_deleted_prefix, (pk, prefix, prefix + PREFIX_END, seq))
            batch.setdefault("hides", {})[pk] = True  # later writes of this batch must look
            _count(batch, pk, deletes=1, modified=visible.now_ms, accessed=visible.now_ms)
            return count

        return cast(int | None, await self._writer.run("delete records by prefix", op))

    def _count_prefix(self, store_id: str, prefix: str, visible: Visibility) -> tuple[int, int, int] | None:
        """(store pk, its write count, visible records under `prefix`), read on one snapshot."""
        clause, params = _SQL.visible(visible)
        with _storage_errors("count records by prefix"):
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                conn.execute("BEGIN")
                found = conn.execute("SELECT pk, write_count FROM stores WHERE id = ?", (store_id,)).fetchone()
                if found is None:
                    return None
                pk, seq = found
                sql = _SQL.count_prefix.format(visible=clause)
                (count,) = conn.execute(sql, (pk, prefix, prefix + PREFIX_END, *params)).fetchone()
                conn.execute("COMMIT")
                return int(pk), int(seq), int(count)
            finally:
                conn.close()

    async def reclaim_expired(self, *, now_ms: int, max_rows: int) -> tuple[int, list[str]]:
        def op(conn: sqlite3.Connection, batch: Batch) -> tuple[int, list[str]]:
            rows = conn.execute(
                "DELETE FROM records WHERE rowid IN (SELECT rowid FROM records WHERE expires_at <= ? "
                "ORDER BY expires_at LIMIT ?) RETURNING store_pk, size, blob_id, key",
                (now_ms, max(max_rows, 0)),
            ).fetchall()
            for pk, size, _, key in rows:
                _count(batch, pk, size=-size, records=-1)
                if self._changes_on:
                    append_change(conn, batch, pk, EventType.EXPIRED, key, now_ms)
            return len(rows), _keep_freed(conn, [blob_id for _, _, blob_id, _ in rows if blob_id])

        return cast(tuple[int, list[str]], await self._writer.run("reclaim expired records", op))

    async def reclaim_store_expired(
        self, store_id: str, visible: Visibility, *, after: str | None, max_keys: int
    ) -> tuple[int, list[str], str | None]:
        def op(conn: sqlite3.Connection, batch: Batch) -> tuple[int, list[str], str | None]:
            found = conn.execute("SELECT pk FROM stores WHERE id = ?", (store_id,)).fetchone()
            if found is None:
                return 0, [], None
            pk = found[0]
            end = conn.execute(_SQL.window_end, (pk, after or "", max(max_keys, 1) - 1)).fetchone()
            last = end[0] if end else None
            sql, params = _SQL.reclaim_window(pk, visible, after=after or "", last=last)
            rows = conn.execute(sql, params).fetchall()
            for size, _, key in rows:
                _count(batch, pk, size=-size, records=-1)
                if self._changes_on:
                    append_change(conn, batch, pk, EventType.EXPIRED, key, visible.now_ms)
            return len(rows), _keep_freed(conn, [blob_id for _, blob_id, _ in rows if blob_id]), last

        return cast(tuple[int, list[str], str | None], await self._writer.run("reclaim expired records", op))

    async def list_expiring_stores(self, *, after: str | None, limit: int) -> list[str]:
        with _storage_errors("list stores with expiry rules"):
            rows = self._conn.execute(_SQL.list_expiring_stores, (after or "", max(limit, 0))).fetchall()
            return [r[0] for r in rows]

    async def update_record_expiry(
        self, store_id: str, change: Callable[[RecordExpiry], RecordExpiry], *, modified_at: int | None = None
    ) -> Store | None:
        with self._write("update a store's expiry rules") as conn:
            found = conn.execute("SELECT record_expiry FROM stores WHERE id = ?", (store_id,)).fetchone()
            if found is None:
                return None
            current = expiry_from_json(found[0]) if found[0] is not None else NO_EXPIRY
            value = expiry_json(change(current))
            times = [] if modified_at is None else [modified_at, modified_at]
            rows = conn.execute(_SQL.set_record_expiry(modified_at=modified_at), (value, *times, store_id)).fetchall()
            return _store(rows[0]) if rows else None

    # housekeeping
    async def purge_deleted(self, *, max_rows: int) -> list[str]:
        """Delete up to `max_rows` record rows of deleted stores, then of deleted prefixes; return
        the blob ids they held.

        Rows holding a blob go first, so a call that returns fewer than `max_rows` ids
        means no blob of a deleted store is left to free (inline rows may remain for
        later calls). A deleted store's marker goes once its last row is gone.
        """
        batch = max(max_rows, 0)
        freed: list[str] = []
        with _storage_errors("look up deleted stores and prefixes"):
            stores_pending = self._conn.execute("SELECT 1 FROM deleted_stores LIMIT 1").fetchone() is not None
            prefixes_pending = self._conn.execute("SELECT 1 FROM deleted_prefixes LIMIT 1").fetchone() is not None
        if stores_pending:
            freed = self._purge_stores(batch)
        if len(freed) < batch and prefixes_pending:
            freed += await self._purge_prefixes(batch - len(freed))
        return freed

    def _purge_stores(self, batch: int) -> list[str]:
        # CROSS JOIN pins the loop order: walk the few deleted stores and probe their rows by
        # index, instead of scanning every record looking for a deleted store.
        victims = "SELECT r.rowid FROM deleted_stores AS d CROSS JOIN records AS r ON r.store_pk = d.store_pk"
        with self._write("purge deleted stores") as conn:
            rows = conn.execute(
                f"DELETE FROM records WHERE rowid IN ({victims} WHERE r.blob_id IS NOT NULL LIMIT ?) RETURNING blob_id",
                (batch,),
            ).fetchall()
            freed = _keep_freed(conn, [row[0] for row in rows])
            if len(freed) < batch:
                conn.execute(f"DELETE FROM records WHERE rowid IN ({victims} LIMIT ?)", (batch - len(freed),))
            conn.execute(
                "DELETE FROM deleted_stores WHERE NOT EXISTS "
                "(SELECT 1 FROM records WHERE records.store_pk = deleted_stores.store_pk)"
            )
        return freed

    async def _purge_prefixes(self, max_rows: int) -> list[str]:
        """Delete up to `max_rows` rows hidden by deletions by prefix, on the group-commit
        writer (the stores they belong to still count them), a few at a time so that a record
        write sharing the transaction is hardly delayed; return their blob ids."""
        freed: list[str] = []
        left = max_rows
        pacer = self._purge_pacer
        pacer.start()
        while left > 0:
            step = min(left, pacer.size)
            count, blob_ids = await self._purge_some_prefixes(step)
            freed += blob_ids
            left -= count
            if count < step:
                break
            await pacer.pause(count if step == pacer.size else None)
        return freed

    async def _purge_some_prefixes(self, max_rows: int) -> tuple[int, list[str]]:
        def op(conn: sqlite3.Connection, batch: Batch) -> tuple[int, list[str]]:
            rows = conn.execute(
                f"DELETE FROM records WHERE rowid IN ({_PREFIX_VICTIMS}) RETURNING store_pk, size, blob_id, key",
                (max_rows,),
            ).fetchall()
            now = time.time_ns() // 1_000_000
            for pk, size, _, key in rows:
                _count(batch, pk, size=-size, records=-1)
                if self._changes_on:
                    append_change(conn, batch, pk, EventType.DELETED, key, now)
            if len(rows) < max_rows:
                conn.execute(_SQL.drop_done_prefixes)
            return len(rows), _keep_freed(conn, [blob_id for _, _, blob_id, _ in rows if blob_id])

        return cast(tuple[int, list[str]], await self._writer.run("purge deleted prefixes", op))

    async def freed_blobs(self, *, limit: int) -> list[str]:
        with _storage_errors("list freed blobs"):
            return [r[0] for r in self._conn.execute(_SQL.freed_blobs, (max(limit, 0),)).fetchall()]

    async def forget_freed_blobs(self, blob_ids: list[str]) -> None:
        if not blob_ids:
            return

        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            conn.executemany("DELETE FROM freed_blobs WHERE blob_id = ?", [(b,) for b in blob_ids])

        await self._writer.run("forget freed blobs", op)

    async def purge_pending(self) -> bool:
        with _storage_errors("look up deleted stores"):
            return self._conn.execute(_SQL.purge_pending).fetchone() is not None

    async def referenced_blob_ids(self, blob_ids: list[str]) -> set[str]:
        wanted = list(dict.fromkeys(blob_ids))
        found: set[str] = set()
        with self._snapshot("look up blob references") as conn:
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                sql = (
                    "SELECT DISTINCT blob_id FROM records "
                    f"WHERE blob_id IS NOT NULL AND blob_id IN ({', '.join('?' * len(chunk))})"
                )
                found.update(row[0] for row in conn.execute(sql, chunk))
        return found

    # operations
    async def ping(self) -> None:
        with _storage_errors("answer"):
            self._conn.execute("SELECT value FROM metadata_generation").fetchone()

    async def totals(self) -> Totals:
        with _storage_errors("count the deployment"):
            stores, records, size = self._conn.execute(_SQL.totals).fetchone()
        return Totals(stores, records, size)

    def group_commit_sizes(self) -> Mapping[int, int]:
        return self._writer.batch_sizes


def _log_write(
    conn: sqlite3.Connection,
    batch: Batch,
    pk: int,
    change_seq: int,
    r: RecordMeta,
    old: RecordMeta | None,
    hidden: bool,
    condition: Condition | None,
) -> None:
    """Append the changes of a record write (see `write_events`)."""
    now, stale = r.modified_at, None
    if condition is not None and condition.now_ms is not None:
        now, stale = condition.now_ms, condition.stale_before
    expired = old is not None and expired_at(old.expires_at, old.modified_at, now, stale)
    events = write_events(replaced=old is not None, hidden=hidden and old is not None, expired=expired)
    for event in events[:-1]:
        append_change(conn, batch, pk, event, r.key, r.modified_at, base=change_seq)
    append_change(conn, batch, pk, events[-1], r.key, r.modified_at, (r.etag, r.size, r.content_type), base=change_seq)


def _store_row(conn: sqlite3.Connection, batch: Batch, store_id: str) -> tuple[int, int, int]:
    """The store's pk, write count and change sequence as the batch began (read once per
    batch: the batch's own writes are added up in it and applied before it commits)."""
    rows = batch.setdefault("store_rows", {})
    found = rows.get(store_id)
    if found is None:
        found = conn.execute("SELECT pk, write_count, change_seq FROM stores WHERE id = ?", (store_id,)).fetchone()
        if found is None:
            raise StorageError(f"Store {store_id} does not exist.")
        rows[store_id] = found
    return cast(tuple[int, int, int], found)


def _hides(conn: sqlite3.Connection, batch: Batch, pk: int) -> bool:
    """Whether a delete by prefix of store `pk` waits to be purged (looked up once per batch:
    nearly always there is none, and a replaced row then needs no second look)."""
    known = batch.setdefault("hides", {})
    if pk not in known:
        known[pk] = (
            conn.execute("SELECT 1 FROM deleted_prefixes WHERE store_pk = ? LIMIT 1", (pk,)).fetchone() is not None
        )
    return bool(known[pk])


def _visible_record(conn: sqlite3.Connection, pk: int, key: str) -> RecordMeta | None:
    """The row of `key` unless a deletion by prefix hid it (expiry is the condition's to judge)."""
    row = conn.execute(_SQL.visible_record, (pk, key)).fetchone()
    return _record(row) if row else None
