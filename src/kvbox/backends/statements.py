"""The SQL both indexes run (SQLite and PostgreSQL), written once and rendered per dialect.

The two keep users, tokens, stores, grants and records in tables of the same shape (see
rows.py), so most statements differ only in what a `Dialect` names. Statements are
rendered once, when a backend module builds its `Statements`; the few that depend on a
call's arguments are picked or assembled from fixed parts. Statements of a different shape
(record writes, counters, purges) stay in their backend, which says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvbox.backends.rows import (
    GRANT_COLUMNS,
    KEY_COLUMNS,
    RECORD_COLUMNS,
    STORE_COLUMNS,
    TOKEN_COLUMNS,
    USER_COLUMNS,
)
from kvbox.core.models import ExpiryRule, GeneralAccess, Visibility
from kvbox.core.sentinels import Unset

# Above every character a key can hold: `key < prefix + PREFIX_END` bounds a prefix scan.
PREFIX_END = "\U0010ffff"
# A row of `records` that a delete by prefix has hidden (its rows wait for purge_deleted):
# written before the deletion (`seq`, the store's write count after the row's write, at
# most the deletion's) under its prefix.
UNDER_DELETED_PREFIX = (
    "EXISTS (SELECT 1 FROM deleted_prefixes AS d WHERE d.store_pk = records.store_pk "
    "AND records.key >= d.prefix AND records.key < d.prefix_end AND records.seq <= d.seq)"
)


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the shared statements spell differently per database."""

    param: str  # the placeholder: "?" for sqlite3, "%s" for psycopg
    greatest: str  # the two-argument maximum: max() in SQLite, greatest() in PostgreSQL
    token_order: str  # the column giving tokens their insertion order: rowid (SQLite), seq (PostgreSQL)
    # A store's name folded for listings by name and searches: lowercase, unnamed stores as the
    # highest character (after every name). Spelled exactly as in the index that serves it.
    folded_name: str = ""

    def params(self, n: int) -> str:
        return ", ".join([self.param] * n)


class Statements:
    """Every shared statement, in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = d = dialect
        p = d.param
        self.store_pk = f"(SELECT pk FROM stores WHERE id = {p})"

        # users and tokens
        self.insert_user = f"INSERT INTO users ({USER_COLUMNS}) VALUES ({d.params(4)})"
        self.get_user = f"SELECT {USER_COLUMNS} FROM users WHERE id = {p}"
        self.get_user_by_name = f"SELECT {USER_COLUMNS} FROM users WHERE username = {p}"
        self.list_users = f"SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"
        self.set_user_default_access = f"UPDATE users SET default_general_access = {p} WHERE id = {p}"
        # Re-inserting an id replaces the token in place, as the reference backend does.
        self.insert_token = (
            f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ({d.params(7)}) ON CONFLICT (id) DO UPDATE SET "
            "user_id = excluded.user_id, token_hash = excluded.token_hash, name = excluded.name, "
            "created_at = excluded.created_at, read_only = excluded.read_only, store_ids = excluded.store_ids"
        )
        self.get_token_by_hash = (
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token_hash = {p} ORDER BY {d.token_order} LIMIT 1"
        )
        self.list_tokens = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_id = {p} ORDER BY {d.token_order}"
        self.delete_token = f"DELETE FROM tokens WHERE id = {p} RETURNING id"

        # stores
        self.insert_store = f"INSERT INTO stores ({STORE_COLUMNS}) VALUES ({d.params(len(STORE_COLUMNS.split(',')))})"
        self.get_store = f"SELECT {STORE_COLUMNS} FROM stores WHERE id = {p}"
        self.get_store_by_name = f"SELECT {STORE_COLUMNS} FROM stores WHERE user_id = {p} AND name = {p}"
        self.list_expired_stores = (
            f"SELECT id FROM stores WHERE name IS NULL AND accessed_at < {p} ORDER BY accessed_at, id LIMIT {p}"
        )

        # sharing
        # Sharing a missing store is a no-op: the row goes in only while the store exists.
        self.set_grant = (
            f"INSERT INTO grants ({GRANT_COLUMNS}) SELECT {d.params(4)} "
            f"WHERE EXISTS (SELECT 1 FROM stores WHERE id = {p}) "
            "ON CONFLICT (store_id, user_id) DO UPDATE SET permission = excluded.permission"
        )
        self.get_grant = f"SELECT {GRANT_COLUMNS} FROM grants WHERE store_id = {p} AND user_id = {p}"
        self.list_grants = f"SELECT {GRANT_COLUMNS} FROM grants WHERE store_id = {p} ORDER BY created_at, user_id"
        self.delete_grant = f"DELETE FROM grants WHERE store_id = {p} AND user_id = {p} RETURNING store_id"

        # records
        self.get_record = (
            f"SELECT {RECORD_COLUMNS} FROM records WHERE store_pk = {self.store_pk} AND key = {p} "
            f"AND NOT {UNDER_DELETED_PREFIX}"
        )
        # A row as readers see it, by the store's pk (conditional writes check it in their transaction).
        self.visible_record = (
            f"SELECT {RECORD_COLUMNS} FROM records WHERE store_pk = {p} AND key = {p} AND NOT {UNDER_DELETED_PREFIX}"
        )
        # One lower bound (strict after a cursor) and at most one upper bound (a prefix) on `key`,
        # so the index on (store_pk, key) is entered at the right place and walked in order.
        self._list_keys = {
            (strict, bounded, hides): f"SELECT {KEY_COLUMNS} FROM records WHERE store_pk = {self.store_pk} "
            f"AND key {'>' if strict else '>='} {p}{f' AND key < {p}' if bounded else ''} "
            f"{f'AND NOT {UNDER_DELETED_PREFIX} ' if hides else ''}AND {{visible}} ORDER BY key LIMIT {p}"
            for strict in (False, True)
            for bounded in (False, True)
            for hides in (False, True)
        }
        # Whether any deletion by prefix of the store waits to be purged (listings that know
        # there is none leave the check out of every row).
        self.has_deleted_prefixes = f"SELECT 1 FROM deleted_prefixes WHERE store_pk = {self.store_pk} LIMIT 1"
        self._no_expiry = f"(expires_at IS NULL OR expires_at > {p})"
        # Rows a delete by prefix counts: under the prefix, not already hidden, visible.
        self.count_prefix = (
            f"SELECT count(*) FROM records WHERE store_pk = {p} AND key >= {p} AND key < {p} "
            f"AND NOT {UNDER_DELETED_PREFIX} AND {{visible}}"
        )

        # record lifecycle
        # A second deletion of the same prefix covers everything the first did, and more.
        self.mark_deleted_prefix = (
            f"INSERT INTO deleted_prefixes (store_pk, prefix, prefix_end, seq) VALUES ({d.params(4)}) "
            f"ON CONFLICT (store_pk, prefix) DO UPDATE SET seq = {d.greatest}(deleted_prefixes.seq, excluded.seq)"
        )
        # Deletions whose hidden rows are all reclaimed are done.
        self.drop_done_prefixes = (
            "DELETE FROM deleted_prefixes WHERE NOT EXISTS (SELECT 1 FROM records WHERE "
            "records.store_pk = deleted_prefixes.store_pk AND records.key >= deleted_prefixes.prefix "
            "AND records.key < deleted_prefixes.prefix_end AND records.seq <= deleted_prefixes.seq)"
        )
        self.list_expiring_stores = (
            f"SELECT id FROM stores WHERE record_expiry IS NOT NULL AND id > {p} ORDER BY id LIMIT {p}"
        )
        # The last key of the next window of a walk through a store's records.
        self.window_end = f"SELECT key FROM records WHERE store_pk = {p} AND key > {p} ORDER BY key LIMIT 1 OFFSET {p}"
        self._reclaim_window = {
            bounded: f"DELETE FROM records WHERE store_pk = {p} AND key > {p}{f' AND key <= {p}' if bounded else ''} "
            "AND NOT ({visible}) RETURNING size, blob_id, key"
            for bounded in (False, True)
        }

        # housekeeping
        self.freed_blobs = f"SELECT blob_id FROM freed_blobs ORDER BY blob_id LIMIT {p}"
        self.purge_pending = "SELECT 1 FROM deleted_stores UNION ALL SELECT 1 FROM deleted_prefixes LIMIT 1"

        # operations: the stores' counters, never a scan of the records
        self.totals = "SELECT count(*), coalesce(sum(record_count), 0), coalesce(sum(storage_bytes), 0) FROM stores"

    def update_store(
        self,
        store_id: str,
        *,
        modified_at: int,
        name: str | Unset | None,
        general_access: GeneralAccess | Unset,
        title: str | Unset | None,
    ) -> tuple[str, list[Any]]:
        """Set the given fields (times never move backwards) and return the row."""
        p, greatest = self.dialect.param, self.dialect.greatest
        sets = [f"modified_at = {greatest}(modified_at, {p})", f"accessed_at = {greatest}(accessed_at, {p})"]
        params: list[Any] = [modified_at, modified_at]
        if not isinstance(name, Unset):
            sets.append(f"name = {p}")
            params.append(name)
        if not isinstance(general_access, Unset):
            sets.append(f"general_access = {p}")
            params.append(general_access.value)
        if not isinstance(title, Unset):
            sets.append(f"title = {p}")
            params.append(title)
        return f"UPDATE stores SET {', '.join(sets)} WHERE id = {p} RETURNING {STORE_COLUMNS}", [*params, store_id]

    def set_record_expiry(self, *, modified_at: int | None) -> str:
        """Set a store's `record_expiry` (and its times, for a change a user made) and return
        the row. Parameters: the column's value, [modified_at twice,] the store's id."""
        p, greatest = self.dialect.param, self.dialect.greatest
        sets = [f"record_expiry = {p}"]
        if modified_at is not None:
            sets += [f"modified_at = {greatest}(modified_at, {p})", f"accessed_at = {greatest}(accessed_at, {p})"]
        return f"UPDATE stores SET {', '.join(sets)} WHERE id = {p} RETURNING {STORE_COLUMNS}"

    def reclaim_window(self, pk: int, visible: Visibility, *, after: str, last: str | None) -> tuple[str, list[Any]]:
        """Delete the rows of the store `pk` in the key window (`after`, `last`] (to the end
        when `last` is None) that are no longer visible; returns their size and blob id."""
        clause, params = self.visible(visible)
        bounds: list[Any] = [pk, after] if last is None else [pk, after, last]
        return self._reclaim_window[last is not None].format(visible=clause), [*bounds, *params]

    def deletable_store(self, store_id: str, *, expired_before: int | None) -> tuple[str, list[Any]]:
        """The WHERE clause picking a store to delete: with `expired_before`, only if it is unnamed
        and was last accessed before then."""
        p = self.dialect.param
        if expired_before is None:
            return f"id = {p}", [store_id]
        return f"id = {p} AND name IS NULL AND accessed_at < {p}", [store_id, expired_before]

    def listed_stores(
        self, user_id: str, *, owned: bool, shared: bool, include_unnamed: bool, search: str | None = None
    ) -> tuple[str, list[Any]] | None:
        """The WHERE clause of a store listing, or None when it can match nothing. `search`: a
        name prefix (case-insensitive, a range of the index on the folded name) or an ID."""
        p = self.dialect.param
        who: list[str] = []
        if owned:
            who.append(f"user_id = {p}")
        if shared:
            who.append(f"id IN (SELECT store_id FROM grants WHERE user_id = {p})")
        if not who:
            return None
        where = f"({' OR '.join(who)})" + ("" if include_unnamed else " AND name IS NOT NULL")
        params: list[Any] = [user_id] * len(who)
        if search is not None:
            folded = search.lower()
            name = self.dialect.folded_name
            where += f" AND ({name} >= {p} AND {name} < {p} OR id = {p})"
            params += [folded, folded + PREFIX_END, search]
        return where, params

    def count_stores(self, where: str) -> str:
        return f"SELECT count(*) FROM stores WHERE {where}"

    def store_page(self, where: str, *, desc: bool, with_total: bool = False, by_name: bool = False) -> str:
        """One page (LIMIT, OFFSET parameters) of the stores `where` picks, oldest first (or by
        folded name, unnamed last) unless `desc`; `with_total` adds the count of all matches to
        every row (a window count)."""
        order = "DESC" if desc else "ASC"
        total = ", count(*) OVER ()" if with_total else ""
        by = f"{self.dialect.folded_name} {order}, " if by_name else ""
        return (
            f"SELECT {STORE_COLUMNS}{total} FROM stores WHERE {where} "
            f"ORDER BY {by}created_at {order}, pk {order} LIMIT {self.dialect.param} OFFSET {self.dialect.param}"
        )

    def list_keys(
        self,
        store_id: str,
        *,
        after: str | None,
        prefix: str | None,
        limit: int,
        visible: Visibility | None,
        deleted_prefixes: bool = True,
    ) -> tuple[str, list[Any]]:
        """Listing rows (`KEY_COLUMNS`) after `after` that start with `prefix`, one row past
        `limit` (see rows.key_page); with `visible`, only the records visible then. Rows that
        a deletion by prefix hid are left out unless the caller knows the store has none
        (`deleted_prefixes=False`)."""
        low = prefix or ""
        strict = after is not None and after >= low
        params: list[Any] = [store_id, after if strict else low]
        if prefix:
            params.append(prefix + PREFIX_END)
        clause, clause_params = self.visible(visible)
        params += clause_params
        params.append(max(limit, 0) + 1)
        return self._list_keys[strict, bool(prefix), deleted_prefixes].format(visible=clause), params

    def visible(self, visible: Visibility | None) -> tuple[str, list[Any]]:
        """The condition a record row meets while it is visible (core/expiry.py's `is_gone`,
        negated); None filters nothing."""
        if visible is None:
            return "TRUE", []
        expiry, now = visible.expiry, visible.now_ms
        if not expiry.rules and not expiry.retired:
            return self._no_expiry, [now]
        p = self.dialect.param
        parts: list[str] = []
        params: list[Any] = [now]
        if expiry.rules:
            parts.append(self._expired_by(expiry.rules, now, params))
        for old in expiry.retired:
            parts.append(self._expired_by(old.rules, old.retired_at, params))
        return f"NOT (CASE WHEN expires_at IS NOT NULL THEN expires_at <= {p} ELSE {' OR '.join(parts)} END)", params

    def _expired_by(self, rules: tuple[ExpiryRule, ...], at: int, params: list[Any]) -> str:
        """Whether, at `at`, the longest matching rule has expired a row without its own expiry
        (the rules come longest prefix first, as the first matching WHEN wins)."""
        if not rules:
            return "FALSE"
        p = self.dialect.param
        whens = []
        for rule in rules:
            whens.append(f"WHEN key >= {p} AND key < {p} THEN modified_at <= {p}")
            params += [rule.prefix, rule.prefix + PREFIX_END, at - rule.expire_after_secs * 1000]
        return f"(CASE {' '.join(whens)} ELSE FALSE END)"
