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
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from kvbox.backends.base import BasisChangedError
from kvbox.backends.failures import storage_failure
from kvbox.backends.postgres.feed import PostgresFeed
from kvbox.backends.postgres.pipeline import Pipelines, Statement
from kvbox.backends.postgres.schema import (
    CHANNEL_SQL,
    FOLDED_NAME,
    LOCK_KEY_SQL,
    SCHEMA_VERSION,
    check_version,
    migrate,
    seen_etag_sql,
)
from kvbox.backends.rows import (
    GRANT_COLUMNS,
    STORE_COLUMNS,
    TOKEN_COLUMNS,
    USER_COLUMNS,
    expiry_from_json,
    expiry_json,
    grant_values,
    key_page,
    record_values,
    store_values,
    token_values,
    user_values,
)
from kvbox.backends.rows import RECORD_COLUMNS as _RECORD
from kvbox.backends.rows import grant_from_row as _grant
from kvbox.backends.rows import record_from_row as _record
from kvbox.backends.rows import store_from_row as _store
from kvbox.backends.rows import token_from_row as _token
from kvbox.backends.rows import user_from_row as _user
from kvbox.backends.statements import PREFIX_END, UNDER_DELETED_PREFIX, Dialect, Statements
from kvbox.core.errors import NameNotUniqueError, PreconditionFailedError, StorageError
from kvbox.core.feed import EventType
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
)
from kvbox.core.sentinels import UNSET, Unset

CONNECT_TIMEOUT_S = 10
# How long a request waits for a pooled connection. Longer means the database is down or
# overloaded: the request is answered 503 (retry later) rather than left hanging.
POOL_WAIT_S = 5
PIPELINES = 2  # connections of a process that carry its record reads and writes
DECODED_KEPT = 4096  # models kept by their rows' values, of each kind (see `_Decoded`)

_Model = TypeVar("_Model")
_SQL = Statements(Dialect(param="%s", greatest="greatest", token_order="seq", folded_name=FOLDED_NAME))
# Record writes are one round trip each: a stored function (schema.py) for a put, one
# statement with data-modifying CTEs for a delete. Both lock the store row first.
_PUT_RECORD = (
    "SELECT * FROM kvbox_put_record(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::text[], %s::text[], %s, %s, %s, %s)"
)
_NO_CONDITION = (None, None, False, False, None, None)
# Change feed: a delete moves the store's change_seq past the record it removed and logs
# RECORD.DELETED, in the same statement (postgres/feed.py has the rest).
_CHANGE_SEQ = """
        change_seq = change_seq + CASE WHEN kvbox_changes_on() THEN (SELECT count(*) FROM d) ELSE 0 END"""
_RETURNING_SEQ = " RETURNING pk, change_seq"
_LOG_DELETE = f""",
ch AS (
    INSERT INTO changes (store_pk, seq, event_type, key, created_at)
    SELECT upd.pk, upd.change_seq, 'RECORD.DELETED', d.key, %(now)s FROM d, upd WHERE kvbox_changes_on()
    RETURNING pg_notify({CHANNEL_SQL}, %(store)s)
)"""
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
        accessed_at = greatest(accessed_at, %(now)s),{_CHANGE_SEQ}
    WHERE pk = (SELECT pk FROM s){_RETURNING_SEQ}
){_LOG_DELETE}
SELECT {_RECORD} FROM d
"""
# The same with a condition (schema.py's kvbox_condition_holds on the etag a reader sees, written
# out as the writers have it since schema 7), checked on the record as it is once the store row
# is locked: FOR UPDATE reads the latest committed version of a row that a writer holding the
# lock before us changed. Refused: nothing changes.
_DELETE_RECORD_IF = f"""
WITH s AS (SELECT pk FROM stores WHERE id = %(store)s FOR NO KEY UPDATE),
cur AS (
    SELECT etag, expires_at, modified_at, seq FROM records WHERE store_pk = (SELECT pk FROM s) AND key = %(key)s
    FOR UPDATE
),
seen AS (
    SELECT {
    seen_etag_sql("cur", "(SELECT pk FROM s)", "%(key)s::text", "%(now_seen)s::bigint", "%(stale_before)s::bigint")
} AS etag FROM cur
),
ok AS (
    SELECT kvbox_condition_holds(e.etag, %(if_match)s::text[], %(if_none_match)s::text[], %(must_exist)s,
        %(must_not_exist)s) AS ok
    FROM (SELECT (SELECT etag FROM seen) AS etag OFFSET 0) AS e  -- OFFSET 0: a column, so the function inlines
),
d AS (
    DELETE FROM records WHERE store_pk = (SELECT pk FROM s) AND key = %(key)s AND (SELECT ok FROM ok)
    RETURNING {_RECORD}
),
upd AS (
    UPDATE stores SET delete_count = delete_count + 1, record_count = record_count - (SELECT count(*) FROM d),
        storage_bytes = storage_bytes - coalesce((SELECT sum(size) FROM d), 0),
        modified_at = CASE WHEN EXISTS (SELECT 1 FROM d) THEN greatest(modified_at, %(now)s) ELSE modified_at END,
        accessed_at = greatest(accessed_at, %(now)s),{_CHANGE_SEQ}
    WHERE pk = (SELECT pk FROM s) AND (SELECT ok FROM ok){_RETURNING_SEQ}
){_LOG_DELETE}
SELECT ok.ok, {", ".join("d." + c for c in _RECORD.split(", "))} FROM ok LEFT JOIN d ON true
"""


# The rows a record read is decided on (see `Sighting`), in one statement: the presented
# token and its user, the store named (`{store}`: by ID, by the token user's name, or by an
# owner's username or ID and name), its owner, the caller's grant, and the record.
_READ_AS_COLUMNS = ", ".join(
    f"{alias}.{c}"
    for alias, columns in (("t", TOKEN_COLUMNS), ("u", USER_COLUMNS), ("s", STORE_COLUMNS), ("o", USER_COLUMNS),
                           ("g", GRANT_COLUMNS), ("records", _RECORD))
    for c in columns.split(", ")
)  # fmt: skip
_READ_AS = f"""
SELECT {_READ_AS_COLUMNS}
FROM (SELECT) AS one
LEFT JOIN LATERAL (
    SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = %(hash)s ORDER BY seq LIMIT 1
) AS t ON true
LEFT JOIN users AS u ON u.id = coalesce(t.user_id, %(user)s)
LEFT JOIN stores AS s ON {{store}}
LEFT JOIN users AS o ON o.id = s.user_id
LEFT JOIN grants AS g ON g.store_id = s.id AND g.user_id = u.id AND u.id <> s.user_id
LEFT JOIN records ON records.store_pk = s.pk AND records.key = %(key)s AND NOT {UNDER_DELETED_PREFIX}
"""
# The same for several reads at once, each parameter an array (`{arrays}`), one row per read led
# by its number. Every row is found by one lookup of a unique index: the LIMIT 1 subqueries keep
# the planner to nested loops over the reads, whatever it guesses their number to be.
_READ_AS_MANY = f"""
SELECT q.n, {_READ_AS_COLUMNS}
FROM unnest({{arrays}}) WITH ORDINALITY AS q({{params}}, n)
LEFT JOIN LATERAL (
    SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = q.p_hash ORDER BY seq LIMIT 1
) AS t ON true
LEFT JOIN LATERAL (SELECT {USER_COLUMNS} FROM users WHERE id = coalesce(t.user_id, q.p_user) LIMIT 1) AS u ON true
LEFT JOIN LATERAL (SELECT pk, {STORE_COLUMNS} FROM stores AS s WHERE {{store}} LIMIT 1) AS s ON true
LEFT JOIN LATERAL (SELECT {USER_COLUMNS} FROM users WHERE id = s.user_id LIMIT 1) AS o ON true
LEFT JOIN LATERAL (
    SELECT {GRANT_COLUMNS} FROM grants WHERE store_id = s.id AND user_id = u.id AND u.id <> s.user_id LIMIT 1
) AS g ON true
LEFT JOIN LATERAL (
    SELECT {_RECORD} FROM records WHERE store_pk = s.pk AND key = q.p_key AND NOT {UNDER_DELETED_PREFIX} LIMIT 1
) AS records ON true
"""


def _read_as(store: str, names: tuple[str, ...]) -> Statement:
    """`_READ_AS` with the store found by `store`, a condition on `s` and `u` with `{name}`
    for each of the store's parameters `names`, in their order; with its `many`."""
    params = ("hash", "user", *names, "key")
    one = _READ_AS.format(store=store.format(**{n: f"%({n})s" for n in params}))
    many = _READ_AS_MANY.format(
        arrays=", ".join(f"%({n})s::text[]" for n in params),
        params=", ".join(f"p_{n}" for n in params),
        store=store.format(**{n: f"q.p_{n}" for n in params}),
    )
    return Statement.of(one, read_only=True, many=many)


_READ_AS_BY_ID = _read_as("s.id = {store}", ("store",))
_READ_AS_BY_OWN_NAME = _read_as("s.user_id = u.id AND s.name = {name}", ("name",))
_READ_AS_BY_OWNER = _read_as(
    "s.user_id = coalesce((SELECT id FROM users WHERE username = {owner}), (SELECT id FROM users WHERE id = {owner})) "
    "AND s.name = {name}",
    ("owner", "name"),
)
# Where each row's columns sit in a `_READ_AS` row.
_SPANS = tuple(
    itertools.accumulate(
        (len(c.split(", ")) for c in (TOKEN_COLUMNS, USER_COLUMNS, STORE_COLUMNS, USER_COLUMNS, GRANT_COLUMNS)),
        initial=0,
    )
)
_PUT_RECORD_AS = Statement.of(
    "SELECT * FROM kvbox_put_record_as(%s, %s::text[], %s, %s, %s, %s, %s, "
    "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::text[], %s::text[], %s, %s, %s, %s)"
)


class _Decoded(Generic[_Model]):
    """Models decoded from rows, kept by the rows' values. The token, user, store and grant a
    record read joins come back unchanged on most requests, and a model built once can be
    shared (models are frozen): this saves the decoding only, every request reads the rows."""

    __slots__ = ("_decode", "_kept")

    def __init__(self, decode: Callable[[Any], _Model]) -> None:
        self._decode = decode
        self._kept: dict[tuple[Any, ...], _Model] = {}

    def __call__(self, values: tuple[Any, ...]) -> _Model:
        model = self._kept.get(values)
        if model is None:
            if len(self._kept) >= DECODED_KEPT:
                self._kept.clear()
            model = self._kept[values] = self._decode(values)
        return model


_decoded_token, _decoded_user = _Decoded(_token), _Decoded(_user)
_decoded_store, _decoded_grant = _Decoded(_store), _Decoded(_grant)


def _sighting(row: Any) -> Sighting:
    """A `_READ_AS` row as the rows it joins (None for each one missing)."""
    t, u, s, o, g, r = _SPANS
    return Sighting(
        _decoded_token(row[t:u]) if row[t] is not None else None,
        _decoded_user(row[u:s]) if row[u] is not None else None,
        _decoded_store(row[s:o]) if row[s] is not None else None,
        _decoded_user(row[o:g]) if row[o] is not None else None,
        _decoded_grant(row[g:r]) if row[g] is not None else None,
        _record(row[r:]) if row[r] is not None else None,
    )


def _basis_values(basis: WriteBasis) -> tuple[Any, ...]:
    """A basis as the seven leading arguments of kvbox_put_record_as."""
    token, grant = basis.token, basis.grant
    token_row = [token.id, token.user_id, token.name, str(token.created_at)] if token is not None else None
    store_ids = token_values(token)[6] if token is not None else None
    return (
        basis.token_hash, token_row, token.read_only if token is not None else False, store_ids,
        grant.permission.name if grant is not None else None, basis.name, expiry_json(basis.record_expiry),
    )  # fmt: skip


def _condition_values(condition: Condition | None) -> tuple[Any, ...]:
    """A condition as the six trailing arguments of kvbox_put_record (and of the delete)."""
    if condition is None:
        return _NO_CONDITION
    c = condition
    if_match = list(c.if_match) if c.if_match is not None else None
    if_none_match = list(c.if_none_match) if c.if_none_match is not None else None
    return if_match, if_none_match, c.must_exist, c.must_not_exist, c.now_ms, c.stale_before


# Hide the rows written up to `seq` under a prefix; the store row is locked first, as every
# record write locks it. No row back: the store is gone.
_MARK_PREFIX = """
WITH s AS (
    UPDATE stores SET delete_count = delete_count + 1, modified_at = greatest(modified_at, %(now)s),
        accessed_at = greatest(accessed_at, %(now)s)
    WHERE pk = %(pk)s RETURNING pk
)
INSERT INTO deleted_prefixes (store_pk, prefix, prefix_end, seq) SELECT pk, %(prefix)s, %(end)s, %(seq)s FROM s
ON CONFLICT (store_pk, prefix) DO UPDATE SET seq = greatest(deleted_prefixes.seq, excluded.seq)
RETURNING store_pk
"""
# Delete the chosen rows `c` (still matching `{cond}`) and take them off their stores'
# counters, whose rows the caller has locked first (in pk order, as writers lock them).
_RECLAIM_ROWS = """
WITH d AS (
    DELETE FROM records AS r USING ({victims}) AS c
    WHERE r.store_pk = c.store_pk AND r.key = c.key AND {cond} RETURNING r.store_pk, r.size, r.blob_id, r.key
), t AS (SELECT store_pk, count(*) AS n, sum(size) AS bytes FROM d GROUP BY store_pk),
u AS (
    UPDATE stores AS s SET record_count = s.record_count - t.n, storage_bytes = s.storage_bytes - t.bytes
    FROM t WHERE s.pk = t.store_pk
), f AS (INSERT INTO freed_blobs (blob_id) SELECT blob_id FROM d WHERE blob_id IS NOT NULL ON CONFLICT DO NOTHING)
SELECT blob_id, store_pk, key FROM d
"""
# Note the blobs of the rows this transaction deletes (see `freed_blobs`).
_KEEP_FREED = "INSERT INTO freed_blobs (blob_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"
_LOCK_STORES = "SELECT 1 FROM stores WHERE pk = ANY(%s) ORDER BY pk FOR NO KEY UPDATE"


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
        raise storage_failure(f"The PostgreSQL index failed to {action}: {e}", e) from e


class PostgresMetadataIndex(PostgresFeed):
    """`MetadataIndex` over a PostgreSQL database migrated by `kvbox migrate`. With
    `changes=False` its connections log no record changes (the change feed is off)."""

    def __init__(self, url: str, *, pool_size: int = 10, changes: bool = True) -> None:
        self.url = url
        self._connect_args: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(url):
            self._connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if not changes:
            options = conninfo_to_dict(url).get("options") or ""
            self._connect_args["options"] = f"{options} -c kvbox.changes=off".strip()
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            kwargs=self._connect_args,
            name="kvbox-index",
            timeout=POOL_WAIT_S,
        )
        self._ready = False
        self._opening: asyncio.Lock | None = None
        self._generations = itertools.count()
        # Connections kept for the record path (`_hot`); the pool keeps two for everything else.
        self._pipelines = Pipelines(min(PIPELINES, pool_size - 2))

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

    @property
    def shared_by_nodes(self) -> bool:
        return True

    async def read_record_as(
        self, token_hash: str | None, user_id: str | None, lookup: StoreLookup, key: str
    ) -> Sighting:
        params: dict[str, Any] = {"hash": token_hash, "user": None if token_hash is not None else user_id, "key": key}
        if lookup.store_id is not None:
            sql, params["store"] = _READ_AS_BY_ID, lookup.store_id
        elif lookup.owner is None:
            sql, params["name"] = _READ_AS_BY_OWN_NAME, lookup.name or ""
        else:
            sql, params["owner"], params["name"] = _READ_AS_BY_OWNER, lookup.owner, lookup.name or ""
        row = await self._hot("read a record", sql, params)
        with _storage_errors("read a record"):
            return _sighting(row)

    async def put_record_as(
        self, basis: WriteBasis, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None:
        params = (*_basis_values(basis), store_id, *record_values(record), *_condition_values(condition))
        # One transaction for the writes of a store in a batch: each locks the store's row first.
        row = await self._hot("write a record", _PUT_RECORD_AS, params, group=store_id)
        if row is None or row[0]:
            raise BasisChangedError()
        if row[1]:
            raise PreconditionFailedError()
        with _storage_errors("write a record"):
            return _record((record.key, *row[3:])) if row[2] else None

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

    async def _hot(self, action: str, statement: Statement, params: Any, *, group: str | None = None) -> Any:
        """`_one` for the record path: sent with the other record queries of this loop turn over
        a connection this process keeps between requests (see pipeline.py)."""
        pool = await self._open()
        with _storage_errors(action):
            return await self._pipelines.fetchone(pool, statement, params, group=group)

    async def _all(self, action: str, query: str, params: Any = None) -> list[Any]:
        async with self._conn(action) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def close(self) -> None:
        await self._pipelines.close(self._pool)
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
                await conn.execute(_SQL.insert_user, user_values(user))
        except StorageError as e:
            if isinstance(e.__cause__, errors.UniqueViolation) and _violates(e.__cause__, "users_username"):
                raise NameNotUniqueError(f"User {user.username!r} already exists.") from e.__cause__
            raise

    async def get_user(self, user_id: str) -> User | None:
        row = await self._one("read a user", _SQL.get_user, (user_id,))
        with _storage_errors("read a user"):
            return _user(row) if row else None

    async def get_user_by_name(self, username: str) -> User | None:
        row = await self._one("read a user", _SQL.get_user_by_name, (username,))
        with _storage_errors("read a user"):
            return _user(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._all("list users", _SQL.list_users)
        with _storage_errors("list users"):
            return [_user(r) for r in rows]

    async def set_user_default_access(self, user_id: str, access: GeneralAccess) -> None:
        async with self._conn("update a user") as conn:
            await conn.execute(_SQL.set_user_default_access, (access.value, user_id))

    async def insert_token(self, token: Token) -> None:
        async with self._conn("insert a token") as conn:
            await conn.execute(_SQL.insert_token, token_values(token))

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        row = await self._one("read a token", _SQL.get_token_by_hash, (token_hash,))
        with _storage_errors("read a token"):
            return _token(row) if row else None

    async def list_tokens(self, user_id: str) -> list[Token]:
        rows = await self._all("list tokens", _SQL.list_tokens, (user_id,))
        with _storage_errors("list tokens"):
            return [_token(r) for r in rows]

    async def delete_token(self, token_id: str) -> bool:
        return bool(await self._all("delete a token", _SQL.delete_token, (token_id,)))

    # stores
    async def insert_store(self, store: Store) -> None:
        try:
            async with self._conn("insert a store") as conn:
                await conn.execute(_SQL.insert_store, store_values(store))
        except StorageError as e:
            if isinstance(e.__cause__, errors.UniqueViolation) and _violates(e.__cause__, "stores_name"):
                raise _store_name_taken(store.name) from e.__cause__
            raise

    async def get_store(self, store_id: str) -> Store | None:
        row = await self._one("read a store", _SQL.get_store, (store_id,))
        with _storage_errors("read a store"):
            return _store(row) if row else None

    async def get_store_by_name(self, user_id: str, name: str) -> Store | None:
        row = await self._one("read a store", _SQL.get_store_by_name, (user_id, name))
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
        sql, params = _SQL.update_store(
            store_id, modified_at=modified_at, name=name, general_access=general_access, title=title
        )
        try:
            row = await self._one("update a store", sql, params)
        except StorageError as e:
            if isinstance(e.__cause__, errors.UniqueViolation) and _violates(e.__cause__, "stores_name"):
                raise _store_name_taken(name) from e.__cause__
            raise
        with _storage_errors("update a store"):
            return _store(row) if row else None

    async def delete_store(self, store_id: str, *, expired_before: int | None = None) -> bool:
        where, params = _SQL.deletable_store(store_id, expired_before=expired_before)
        # One statement (SQLite needs three). The records stay behind, unreachable without the
        # store row, until purge_deleted; the grants go with the row (ON DELETE CASCADE).
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
        by_name: bool = False,
        search: str | None = None,
    ) -> StorePage:
        listed = _SQL.listed_stores(user_id, owned=owned, shared=shared, include_unnamed=include_unnamed, search=search)
        if listed is None:
            return StorePage(total=0, items=[])
        where, params = listed
        # The window count is taken before LIMIT, so one query (one round trip, where SQLite
        # makes two cheap calls) gives the page and the total.
        page_sql = _SQL.store_page(where, desc=desc, with_total=True, by_name=by_name)
        rows = await self._all("list stores", page_sql, (*params, max(limit, 0), max(offset, 0)))
        if rows:
            total = rows[0][-1]
        else:
            (total,) = await self._one("list stores", _SQL.count_stores(where), params)
        with _storage_errors("list stores"):
            return StorePage(total=total, items=[_store(r) for r in rows])

    async def list_expired_stores(self, *, accessed_before: int, limit: int) -> list[str]:
        rows = await self._all("list expired stores", _SQL.list_expired_stores, (accessed_before, max(limit, 0)))
        return [r[0] for r in rows]

    # sharing
    async def set_grant(self, grant: Grant) -> None:
        try:
            async with self._conn("share a store") as conn:
                await conn.execute(_SQL.set_grant, (*grant_values(grant), grant.store_id))
        except StorageError as e:
            if not isinstance(e.__cause__, errors.ForeignKeyViolation):
                raise  # else the store was deleted meanwhile: sharing a missing store is a no-op

    async def get_grant(self, store_id: str, user_id: str) -> Grant | None:
        row = await self._one("read a grant", _SQL.get_grant, (store_id, user_id))
        with _storage_errors("read a grant"):
            return _grant(row) if row else None

    async def list_grants(self, store_id: str) -> list[Grant]:
        rows = await self._all("list grants", _SQL.list_grants, (store_id,))
        with _storage_errors("list grants"):
            return [_grant(r) for r in rows]

    async def delete_grant(self, store_id: str, user_id: str) -> bool:
        return bool(await self._all("unshare a store", _SQL.delete_grant, (store_id, user_id)))

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
        row = await self._one("read a record", _SQL.get_record, (store_id, key))
        with _storage_errors("read a record"):
            return _record(row) if row else None

    async def put_record(
        self, store_id: str, record: RecordMeta, *, condition: Condition | None = None
    ) -> RecordMeta | None:
        # The function takes the record in the order of RECORD_COLUMNS and the condition, and
        # returns whether it refused, whether a record was replaced and that record's columns
        # in the same order.
        params = (store_id, *record_values(record), *_condition_values(condition))
        row = await self._one("write a record", _PUT_RECORD, params)
        if row is None:
            raise StorageError(f"Store {store_id} does not exist.")
        if row[0]:
            raise PreconditionFailedError()
        with _storage_errors("write a record"):
            return _record((record.key, *row[2:])) if row[1] else None

    async def delete_record(
        self, store_id: str, key: str, *, now_ms: int, condition: Condition | None = None
    ) -> RecordMeta | None:
        params: dict[str, Any] = {"store": store_id, "key": key, "now": now_ms}
        if condition is None:
            row = await self._one("delete a record", _DELETE_RECORD, params)
        else:
            names = ("if_match", "if_none_match", "must_exist", "must_not_exist", "now_seen", "stale_before")
            params.update(zip(names, _condition_values(condition), strict=True))
            found = await self._one("delete a record", _DELETE_RECORD_IF, params)
            if found is None or not found[0]:
                raise PreconditionFailedError()
            row = found[1:] if found[1] is not None else None
        with _storage_errors("delete a record"):
            return _record(row) if row else None

    async def list_keys(
        self, store_id: str, *, after: str | None, prefix: str | None, limit: int, visible: Visibility | None = None
    ) -> KeyPage:
        # A range scan of the primary key.
        sql, params = _SQL.list_keys(store_id, after=after, prefix=prefix, limit=limit, visible=visible)
        return key_page(await self._all("list keys", sql, params), limit)

    # record lifecycle
    async def delete_prefix(self, store_id: str, prefix: str, *, visible: Visibility) -> int | None:
        """Count the visible records under `prefix` on one read-only snapshot (writers go on),
        then hide the rows written up to it in one short statement."""
        clause, params = _SQL.visible(visible)
        async with self._conn("delete records by prefix") as conn:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute("SELECT pk, write_count FROM stores WHERE id = %s", (store_id,))
                found = await cur.fetchone()
                if found is None:
                    return None
                pk, seq = found
                sql = _SQL.count_prefix.format(visible=clause)
                cur = await conn.execute(sql, (pk, prefix, prefix + PREFIX_END, *params))
                (count,) = await cur.fetchone() or (0,)
            mark = {"pk": pk, "prefix": prefix, "end": prefix + PREFIX_END, "seq": seq, "now": visible.now_ms}
            cur = await conn.execute(_MARK_PREFIX, mark)
            return int(count) if await cur.fetchone() else None

    async def reclaim_expired(self, *, now_ms: int, max_rows: int) -> tuple[int, list[str]]:
        async with self._conn("reclaim expired records") as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT store_pk, key FROM records WHERE expires_at <= %s ORDER BY expires_at LIMIT %s",
                (now_ms, max(max_rows, 0)),
            )
            chosen = await cur.fetchall()
            if not chosen:
                return 0, []
            await conn.execute(_LOCK_STORES, (sorted({pk for pk, _ in chosen}),))
            victims = "SELECT * FROM unnest(%s::bigint[], %s::text[]) AS c(store_pk, key)"
            sql = _RECLAIM_ROWS.format(victims=victims, cond="r.expires_at <= %s")
            cur = await conn.execute(sql, ([pk for pk, _ in chosen], [key for _, key in chosen], now_ms))
            rows = await cur.fetchall()
            await self._log_removed(conn, EventType.EXPIRED, [(pk, key) for _, pk, key in rows], now_ms)
            return len(rows), [blob_id for blob_id, _, _ in rows if blob_id]

    async def reclaim_store_expired(
        self, store_id: str, visible: Visibility, *, after: str | None, max_keys: int
    ) -> tuple[int, list[str], str | None]:
        async with self._conn("reclaim expired records") as conn, conn.transaction():
            cur = await conn.execute("SELECT pk FROM stores WHERE id = %s FOR NO KEY UPDATE", (store_id,))
            found = await cur.fetchone()
            if found is None:
                return 0, [], None
            pk = found[0]
            cur = await conn.execute(_SQL.window_end, (pk, after or "", max(max_keys, 1) - 1))
            end = await cur.fetchone()
            last = end[0] if end else None
            sql, params = _SQL.reclaim_window(pk, visible, after=after or "", last=last)
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
            freed = [blob_id for _, blob_id, _ in rows if blob_id]
            if rows:
                await conn.execute(
                    "UPDATE stores SET record_count = record_count - %s, storage_bytes = storage_bytes - %s "
                    "WHERE pk = %s",
                    (len(rows), sum(size for size, _, _ in rows), pk),
                )
                await self._log_removed(conn, EventType.EXPIRED, [(pk, key) for _, _, key in rows], visible.now_ms)
            if freed:
                await conn.execute(_KEEP_FREED, (freed,))
            return len(rows), freed, last

    async def list_expiring_stores(self, *, after: str | None, limit: int) -> list[str]:
        rows = await self._all("list stores with expiry rules", _SQL.list_expiring_stores, (after or "", max(limit, 0)))
        return [r[0] for r in rows]

    async def update_record_expiry(
        self, store_id: str, change: Callable[[RecordExpiry], RecordExpiry], *, modified_at: int | None = None
    ) -> Store | None:
        async with self._conn("update a store's expiry rules") as conn, conn.transaction():
            cur = await conn.execute("SELECT record_expiry FROM stores WHERE id = %s FOR UPDATE", (store_id,))
            found = await cur.fetchone()
            if found is None:
                return None
            current = expiry_from_json(found[0]) if found[0] is not None else NO_EXPIRY
            value = expiry_json(change(current))
            times = [] if modified_at is None else [modified_at, modified_at]
            cur = await conn.execute(_SQL.set_record_expiry(modified_at=modified_at), (value, *times, store_id))
            row = await cur.fetchone()
            return _store(row) if row else None

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
            if freed:
                await conn.execute(_KEEP_FREED, (freed,))
            if len(freed) < batch:
                await conn.execute(purge.format(v=victims.format(cond="true")), (batch - len(freed),))
            await conn.execute(
                "DELETE FROM deleted_stores AS d "
                "WHERE NOT EXISTS (SELECT 1 FROM records AS r WHERE r.store_pk = d.store_pk)"
            )
        if len(freed) < batch and await self._one("look up deleted prefixes", "SELECT 1 FROM deleted_prefixes LIMIT 1"):
            freed += await self._purge_prefixes(batch - len(freed))
        return freed

    async def _purge_prefixes(self, max_rows: int) -> list[str]:
        """Delete up to `max_rows` rows hidden by deletions by prefix; their stores still count
        them, so their rows are locked first (in pk order, as writers lock them)."""
        victims = (
            "SELECT r.store_pk, r.key FROM deleted_prefixes AS dp JOIN records AS r ON r.store_pk = dp.store_pk "
            "AND r.key >= dp.prefix AND r.key < dp.prefix_end AND r.seq <= dp.seq LIMIT %s FOR UPDATE OF r SKIP LOCKED"
        )
        async with self._conn("purge deleted prefixes") as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM stores WHERE pk IN (SELECT store_pk FROM deleted_prefixes) ORDER BY pk FOR NO KEY UPDATE"
            )
            cur = await conn.execute(_RECLAIM_ROWS.format(victims=victims, cond="true"), (max_rows,))
            rows = await cur.fetchall()
            now = time.time_ns() // 1_000_000
            await self._log_removed(conn, EventType.DELETED, [(pk, key) for _, pk, key in rows], now)
            if len(rows) < max_rows:
                await conn.execute(_SQL.drop_done_prefixes)
            return [blob_id for blob_id, _, _ in rows if blob_id]

    async def freed_blobs(self, *, limit: int) -> list[str]:
        return [r[0] for r in await self._all("list freed blobs", _SQL.freed_blobs, (max(limit, 0),))]

    async def forget_freed_blobs(self, blob_ids: list[str]) -> None:
        if blob_ids:
            await self._all("forget freed blobs", "DELETE FROM freed_blobs WHERE blob_id = ANY(%s) RETURNING 1",
                            (blob_ids,))  # fmt: skip

    async def purge_pending(self) -> bool:
        return await self._one("look up deleted stores", _SQL.purge_pending) is not None

    async def referenced_blob_ids(self, blob_ids: list[str]) -> set[str]:
        if not blob_ids:
            return set()
        # One array parameter, where SQLite binds the ids in chunks of scalar parameters.
        sql = "SELECT DISTINCT blob_id FROM records WHERE blob_id = ANY(%s)"
        return {r[0] for r in await self._all("look up blob references", sql, (list(dict.fromkeys(blob_ids)),))}

    # operations
    async def ping(self) -> None:
        await self._one("answer", "SELECT 1")

    async def totals(self) -> Totals:
        stores, records, size = await self._one("count the deployment", _SQL.totals)
        return Totals(int(stores), int(records), int(size))

    def group_commit_sizes(self) -> Mapping[int, int]:
        """Each write is its own transaction (PostgreSQL takes concurrent writers itself)."""
        return {}
