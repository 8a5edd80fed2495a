"""The scale-out metadata index: users, tokens, stores and record rows in PostgreSQL.

Many kvbox processes on many hosts share one database. Every method is one transaction
and every read sees the latest commit of any node, so a write acknowledged by one node
is visible on every other at once. Writers of one store take its row lock first, which
serializes them against each other and against the store's deletion; the statements of a
write are pipelined, so a write costs one network round trip. Connections come from a
pool that opens lazily inside the event loop of the process that uses it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from kvbox.backends.postgres.schema import LOCK_KEY_SQL, SCHEMA_VERSION, check_version, migrate
from kvbox.backends.rows import GRANT_COLUMNS as _GRANT
from kvbox.backends.rows import RECORD_COLUMNS as _RECORD
from kvbox.backends.rows import STORE_COLUMNS as _STORE
from kvbox.backends.rows import TOKEN_COLUMNS as _TOKEN
from kvbox.backends.rows import USER_COLUMNS as _USER
from kvbox.backends.rows import grant_from_row as _grant
from kvbox.backends.rows import record_from_row as _record
from kvbox.backends.rows import record_values
from kvbox.backends.rows import store_from_row as _store
from kvbox.backends.rows import token_from_row as _token
from kvbox.backends.rows import user_from_row as _user
from kvbox.core.errors import NameNotUniqueError, StorageError
from kvbox.core.models import (
    GeneralAccess,
    Grant,
    KeyItem,
    KeyPage,
    RecordMeta,
    StatsDelta,
    Store,
    StorePage,
    Token,
    User,
)
from kvbox.core.sentinels import UNSET, Unset

CONNECT_TIMEOUT_S = 10
_PREFIX_END = "\U0010ffff"

_STORE_PK = "(SELECT pk FROM stores WHERE id = %s)"
_PUT_RECORD = "SELECT * FROM kvbox_put_record(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
# One statement. It locks the store row first, as kvbox_put_record does (one lock order:
# no deadlocks); a write of the same key that commits meanwhile is then seen through the
# record's row lock (DELETE re-reads the row it waited for), so the counts stay exact.
# Deleting a missing key still counts as a delete and an access, but modifies nothing.
_DELETE_RECORD = f"""
WITH s AS (SELECT pk FROM stores WHERE id = %(store)s FOR NO KEY UPDATE),
d AS (DELETE FROM records WHERE store_pk = (SELECT pk FROM s) AND key = %(key)s RETURNING {_RECORD}),
upd AS (
    UPDATE stores SET delete_count = delete_count + 1, record_count = record_count - (SELECT count(*) FROM d),
        storage_bytes = storage_bytes - coalesce((SELECT sum(size) FROM d), 0),
        modified_at = CASE WHEN EXISTS (SELECT 1 FROM d) THEN greatest(modified_at, %(now)s) ELSE modified_at END,
        accessed_at = greatest(accessed_at, %(now)s)
    WHERE pk = (SELECT pk FROM s)
)
SELECT {_RECORD} FROM d
"""


def _store_name_taken(name: object) -> NameNotUniqueError:
    return NameNotUniqueError(f"You already have a key-value store named {name!r}.")


def _violates(error: errors.UniqueViolation, constraint: str) -> bool:
    return error.diag.constraint_name == constraint


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Re-raise database failures and undecodable rows as `StorageError`, cause chained."""
    try:
        yield
    except (psycopg.Error, ValueError, TypeError, KeyError) as e:
        raise StorageError(f"The PostgreSQL index failed to {action}: {e}") from e


class PostgresMetadataIndex:
    """`MetadataIndex` over a PostgreSQL database migrated by `kvbox migrate`."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._connect_args: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(url):
            self._connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            kwargs=self._connect_args,
            name="kvbox-index",
        )
        self._ready = False
        self._opening: asyncio.Lock | None = None
        self._generations = itertools.count()

    async def _open(self) -> AsyncConnectionPool:
        """The pool, opened on first use once a first connection found the schema current.

        That first connection is made directly, so a wrong URL or a missing migration
        fails at once with the server's own message instead of a pool timeout.
        """
        if self._ready:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if not self._ready:
                with _storage_errors("connect"):
                    async with await AsyncConnection.connect(self.url, **self._connect_args) as conn:
                        await check_version(conn)
                    await self._pool.open()
                self._ready = True
        return self._pool

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema (`kvbox migrate`); returns (version found, version now)."""
        with _storage_errors("migrate the schema"):
            async with await AsyncConnection.connect(self.url, **self._connect_args) as conn:
                found = await migrate(conn)
        return found, SCHEMA_VERSION

    def read_generation(self) -> int:
        """A new value on every call: other nodes commit to the same database and nothing
        cheaper than a query tells whether they did, so readers never reuse rows."""
        return next(self._generations)

    def metadata_generation(self) -> int:
        """A new value on every call, as `read_generation`."""
        return next(self._generations)

    @asynccontextmanager
    async def _conn(self, action: str) -> AsyncIterator[AsyncConnection]:
        pool = await self._open()
        with _storage_errors(action):
            async with pool.connection() as conn:
                yield conn

    async def _one(self, action: str, query: str, params: Any = None) -> Any:
        async with self._conn(action) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def _all(self, action: str, query: str, params: Any = None) -> list[Any]:
        async with self._conn(action) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Hold the session advisory lock `name` for the block, if no other node holds it.

        Yields whether this process got it. The lock lives on one pooled connection, so a
        node that dies (its connection drops) releases it.
        """
        pool = await self._open()
        with _storage_errors("take an advisory lock"):
            conn = await pool.getconn()
        try:
            with _storage_errors("take an advisory lock"):
                cur = await conn.execute(f"SELECT pg_try_advisory_lock({LOCK_KEY_SQL})", (name,))
                row = await cur.fetchone()
            got = bool(row and row[0])
            try:
                yield got
            finally:
                if got:
                    with _storage_errors("release an advisory lock"):
                        await conn.execute(f"SELECT pg_advisory_unlock({LOCK_KEY_SQL})", (name,))
        finally:
            await pool.putconn(conn)

    # users and tokens
    async def insert_user(self, user: User) -> None:
        try:
            async with self._conn("insert a user") as conn:
                await conn.execute(
                    f"INSERT INTO users ({_USER}) VALUES (%s, %s, %s, %s)",
                    (user.id, user.username, user.created_at, user.default_general_access.value),
                )
        except StorageError as e:
            if isinstance(e.__cause__, errors.UniqueViolation) and _violates(e.__cause__, "users_username"):
                raise NameNotUniqueError(f"User {user.username!r} already exists.") from e.__cause__
            raise

    async def get_user(self, user_id: str) -> User | None:
        row = await self._one("read a user", f"SELECT {_USER} FROM users WHERE id = %s", (user_id,))
        with _storage_errors("read a user"):
            return _user(row) if row else None

    async def get_user_by_name(self, username: str) -> User | None:
        row = await self._one("read a user", f"SELECT {_USER} FROM users WHERE username = %s", (username,))
        with _storage_errors("read a user"):
            return _user(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._all("list users", f"SELECT {_USER} FROM users ORDER BY created_at, id")
        with _storage_errors("list users"):
            return [_user(r) for r in rows]

    async def set_user_default_access(self, user_id: str, access: GeneralAccess) -> None:
        async with self._conn("update a user") as conn:
            await conn.execute("UPDATE users SET default_general_access = %s WHERE id = %s", (access.value, user_id))

    async def insert_token(self, token: Token) -> None:
        # Re-inserting an id replaces the token in place, as the reference backend does.
        async with self._conn("insert a token") as conn:
            await conn.execute(
                f"INSERT INTO tokens ({_TOKEN}) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "user_id = excluded.user_id, token_hash = excluded.token_hash, name = excluded.name, "
                "created_at = excluded.created_at, read_only = excluded.read_only, store_ids = excluded.store_ids",
                (
                    token.id,
                    token.user_id,
                    token.token_hash,
                    token.name,
                    token.created_at,
                    token.read_only,
                    json.dumps(list(token.store_ids)) if token.store_ids is not None else None,
                ),
            )

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        sql = f"SELECT {_TOKEN} FROM tokens WHERE token_hash = %s ORDER BY seq LIMIT 1"
        row = await self._one("read a token", sql, (token_hash,))
        with _storage_errors("read a token"):
            return _token(row) if row else None

    async def list_tokens(self, user_id: str) -> list[Token]:
        rows = await self._all(
            "list tokens", f"SELECT {_TOKEN} FROM tokens WHERE user_id = %s ORDER BY seq", (user_id,)
        )
        with _storage_errors("list tokens"):
            return [_token(r) for r in rows]

    async def delete_token(self, token_id: str) -> bool:
        return bool(await self._all("delete a token", "DELETE FROM tokens WHERE id = %s RETURNING id", (token_id,)))

    # stores
    async def insert_store(self, store: Store) -> None:
        s = store.stats
        values = (
            store.id, store.name, store.user_id, store.created_at, store.modified_at, store.accessed_at,
            store.url_signing_secret, store.general_access.value,
            json.dumps(store.schema) if store.schema is not None else None,
            s.read_count, s.write_count, s.delete_count, s.list_count, s.storage_bytes, store.record_count,
            store.title,
        )  # fmt: skip
        try:
            async with self._conn("insert a store") as conn:
                await conn.execute(f"INSERT INTO stores ({_STORE}) VALUES ({', '.join(['%s'] * len(values))})", values)
        except StorageError as e:
            if isinstance(e.__cause__, errors.UniqueViolation) and _violates(e.__cause__, "stores_name"):
                raise _store_name_taken(store.name) from e.__cause__
            raise

    async def get_store(self, store_id: str) -> Store | None:
        row = await self._one("read a store", f"SELECT {_STORE} FROM stores WHERE id = %s", (store_id,))
        with _storage_errors("read a store"):
            return _store(row) if row else None

    async def get_store_by_name(self, user_id: str, name: str) -> Store | None:
        sql = f"SELECT {_STORE} FROM stores WHERE user_id = %s AND name = %s"
        row = await self._one("read a store", sql, (user_id, name))
        with _storage_errors("read a store"):
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
        sets = ["modified_at = greatest(modified_at, %s)", "accessed_at = greatest(accessed_at, %s)"]
        params: list[Any] = [modified_at, modified_at]
        if not isinstance(name, Unset):
            sets.append("name = %s")
            params.append(name)
        if not isinstance(general_access, Unset):
            sets.append("general_access = %s")
            params.append(general_access.value)
        if not isinstance(title, Unset):
            sets.append("title = %s")
            params.append(title)
        sql = f"UPDATE stores SET {', '.join(sets)} WHERE id = %s RETURNING {_STORE}"
        try:
            row = await self._one("update a store", sql, (*params, store_id))
        except StorageError as e:
            if isinstance(e.__cause__, errors.UniqueViolation) and _violates(e.__cause__, "stores_name"):
                raise _store_name_taken(name) from e.__cause__
            raise
        with _storage_errors("update a store"):
            return _store(row) if row else None

    async def delete_store(self, store_id: str, *, expired_before: int | None = None) -> bool:
        where = "id = %s"
        params: list[Any] = [store_id]
        if expired_before is not None:
            where += " AND name IS NULL AND accessed_at < %s"
            params.append(expired_before)
        # The records stay behind, unreachable without the store row, until purge_deleted;
        # the grants go with the row (ON DELETE CASCADE).
        sql = (
            f"WITH d AS (DELETE FROM stores WHERE {where} RETURNING pk, id) "
            "INSERT INTO deleted_stores (store_pk, store_id) SELECT pk, id FROM d RETURNING store_pk"
        )
        return bool(await self._all("delete a store", sql, params))

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
    ) -> StorePage:
        who: list[str] = []
        params: list[Any] = []
        if owned:
            who.append("user_id = %s")
            params.append(user_id)
        if shared:
            who.append("id IN (SELECT store_id FROM grants WHERE user_id = %s)")
            params.append(user_id)
        if not who:
            return StorePage(total=0, items=[])
        where = f"({' OR '.join(who)})" + ("" if include_unnamed else " AND name IS NOT NULL")
        order = "DESC" if desc else "ASC"
        # The window count is taken before LIMIT, so one query gives the page and the total.
        page_sql = (
            f"SELECT {_STORE}, count(*) OVER () FROM stores WHERE {where} "
            f"ORDER BY created_at {order}, pk {order} LIMIT %s OFFSET %s"
        )
        rows = await self._all("list stores", page_sql, (*params, max(limit, 0), max(offset, 0)))
        if rows:
            total = rows[0][-1]
        else:
            (total,) = await self._one("list stores", f"SELECT count(*) FROM stores WHERE {where}", params)
        with _storage_errors("list stores"):
            return StorePage(total=total, items=[_store(r) for r in rows])

    async def list_expired_stores(self, *, accessed_before: int, limit: int) -> list[str]:
        sql = "SELECT id FROM stores WHERE name IS NULL AND accessed_at < %s ORDER BY accessed_at, id LIMIT %s"
        return [r[0] for r in await self._all("list expired stores", sql, (accessed_before, max(limit, 0)))]

    # sharing
    async def set_grant(self, grant: Grant) -> None:
        sql = (
            f"INSERT INTO grants ({_GRANT}) SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM stores WHERE id = %s) "
            "ON CONFLICT (store_id, user_id) DO UPDATE SET permission = excluded.permission"
        )
        params = (grant.store_id, grant.user_id, grant.permission.name, grant.created_at, grant.store_id)
        try:
            async with self._conn("share a store") as conn:
                await conn.execute(sql, params)
        except StorageError as e:
            if not isinstance(e.__cause__, errors.ForeignKeyViolation):
                raise  # else the store was deleted meanwhile: sharing a missing store is a no-op

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        sql = f"SELECT {_GRANT} FROM grants WHERE store_id = %s AND user_id = %s"
        row = await self._one("read a grant", sql, (store_id, user_id))
        with _storage_errors("read a grant"):
            return _grant(row) if row else None

    async def list_grants(self, store_id: str) -> list[Grant]:
        sql = f"SELECT {_GRANT} FROM grants WHERE store_id = %s ORDER BY created_at, user_id"
        rows = await self._all("list grants", sql, (store_id,))
        with _storage_errors("list grants"):
            return [_grant(r) for r in rows]

    async def delete_grant(self, store_id: str, user_id: str) -> bool:
        sql = "DELETE FROM grants WHERE store_id = %s AND user_id = %s RETURNING store_id"
        return bool(await self._all("unshare a store", sql, (store_id, user_id)))

    async def apply_stats(self, deltas: Mapping[str, StatsDelta]) -> None:
        if not deltas:
            return
        ids = sorted(deltas)
        # Rows are locked in id order, so two nodes flushing overlapping stores never deadlock.
        async with self._conn("apply stats") as conn, conn.pipeline(), conn.transaction():
            await conn.execute("SELECT 1 FROM stores WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", (ids,))
            await conn.execute(
                "UPDATE stores AS s SET read_count = s.read_count + d.reads, list_count = s.list_count + d.lists, "
                "accessed_at = greatest(s.accessed_at, d.at) "
                "FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[]) AS d(id, reads, lists, at) "
                "WHERE s.id = d.id",
                (
                    ids,
                    [deltas[i].reads for i in ids],
                    [deltas[i].lists for i in ids],
                    [deltas[i].accessed_at for i in ids],
                ),
            )

    # records
    async def get_record(self, store_id: str, key: str) -> RecordMeta | None:
        sql = f"SELECT {_RECORD} FROM records WHERE store_pk = {_STORE_PK} AND key = %s"
        row = await self._one("read a record", sql, (store_id, key))
        with _storage_errors("read a record"):
            return _record(row) if row else None

    async def put_record(self, store_id: str, record: RecordMeta) -> RecordMeta | None:
        # The function takes the record in the order of RECORD_COLUMNS and returns the replaced
        # one in the same order, with whether there was one in place of the key.
        row = await self._one("write a record", _PUT_RECORD, (store_id, *record_values(record)))
        if row is None:
            raise StorageError(f"Store {store_id} does not exist.")
        with _storage_errors("write a record"):
            return _record((record.key, *row[1:])) if row[0] else None

    async def delete_record(self, store_id: str, key: str, *, now_ms: int) -> RecordMeta | None:
        row = await self._one("delete a record", _DELETE_RECORD, {"store": store_id, "key": key, "now": now_ms})
        with _storage_errors("delete a record"):
            return _record(row) if row else None

    async def list_keys(self, store_id: str, *, after: str | None, prefix: str | None, limit: int) -> KeyPage:
        # One lower bound and at most one upper bound on `key`: an index-only range scan.
        low = prefix or ""
        if after is not None and after >= low:
            where, params = "key > %s", [store_id, after]
        else:
            where, params = "key >= %s", [store_id, low]
        if prefix:
            where += " AND key < %s"
            params.append(prefix + _PREFIX_END)
        limit = max(limit, 0)
        sql = f"SELECT key, size FROM records WHERE store_pk = {_STORE_PK} AND {where} ORDER BY key LIMIT %s"
        rows = await self._all("list keys", sql, (*params, limit + 1))
        items = [KeyItem(key=k, size=size) for k, size in rows[:limit]]
        return KeyPage(items=items, is_truncated=len(rows) > limit)

    # housekeeping
    async def purge_deleted(self, *, max_rows: int) -> list[str]:
        """Delete up to `max_rows` record rows of deleted stores; return the blob ids they held.

        Rows holding a blob go first (see the SQLite index). Rows another node is purging
        right now are skipped, so each blob id is returned exactly once across nodes.
        """
        batch = max(max_rows, 0)
        victims = (
            "SELECT r.store_pk, r.key FROM deleted_stores AS d JOIN records AS r ON r.store_pk = d.store_pk "
            "WHERE {cond} LIMIT %s FOR UPDATE OF r SKIP LOCKED"
        )
        purge = "DELETE FROM records AS r USING ({v}) AS v WHERE r.store_pk = v.store_pk AND r.key = v.key"
        async with self._conn("purge deleted stores") as conn, conn.transaction():
            cur = await conn.execute(
                purge.format(v=victims.format(cond="r.blob_id IS NOT NULL")) + " RETURNING r.blob_id",
                (batch,),
            )
            freed = [row[0] for row in await cur.fetchall()]
            if len(freed) < batch:
                await conn.execute(purge.format(v=victims.format(cond="true")), (batch - len(freed),))
            await conn.execute(
                "DELETE FROM deleted_stores AS d "
                "WHERE NOT EXISTS (SELECT 1 FROM records AS r WHERE r.store_pk = d.store_pk)"
            )
            return freed

    async def purge_pending(self) -> bool:
        row = await self._one("look up deleted stores", "SELECT EXISTS (SELECT 1 FROM deleted_stores)")
        return bool(row and row[0])

    async def referenced_blob_ids(self, blob_ids: list[str]) -> set[str]:
        if not blob_ids:
            return set()
        sql = "SELECT DISTINCT blob_id FROM records WHERE blob_id = ANY(%s)"
        return {r[0] for r in await self._all("look up blob references", sql, (list(dict.fromkeys(blob_ids)),))}
