"""The SQLite index's change log and webhooks.

Changes are appended by the record writes' own operations on the group-commit writer
(`append_change`), so each lands in the same transaction as its record change; a batch
numbers its changes from the store's `change_seq` as it was when the batch began, and
before it commits inserts them all in one statement and moves `change_seq` once
(`apply_change_seqs`). Other processes' changes
are noticed through `PRAGMA data_version`, read a few times a second.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, cast

from kvbox.backends.feed_statements import (
    FeedStatements,
    attempt_from_row,
    attempt_values,
    change_from_row,
    delivery_from_row,
    delivery_values,
    trim_point,
    webhook_from_row,
    webhook_values,
)
from kvbox.backends.sqlite.writer import Batch, LoopWriter
from kvbox.backends.statements import Dialect
from kvbox.core.feed import ChangePage
from kvbox.core.webhooks import ATTEMPTS_KEPT, Attempt, Delivery, Webhook, pending_attempt

_FEED = FeedStatements(Dialect(param="?", greatest="max", token_order="rowid"))
# How often other processes' commits are looked for while the feed is watched.
WATCH_INTERVAL_S = 0.1


def next_seq(conn: sqlite3.Connection, batch: Batch, pk: int, base: int | None = None) -> int:
    """The store's next change sequence in this batch (`base`: its `change_seq`, when the
    caller has just read it)."""
    bases = batch.setdefault("change_base", {})
    if pk not in bases:
        if base is None:
            base = conn.execute("SELECT change_seq FROM stores WHERE pk = ?", (pk,)).fetchone()[0]
        bases[pk] = base
    counts = batch.setdefault("changes", {})
    counts[pk] = counts.get(pk, 0) + 1
    return int(bases[pk]) + int(counts[pk])


def append_change(
    conn: sqlite3.Connection,
    batch: Batch,
    pk: int,
    event: str,
    key: str,
    now_ms: int,
    row: tuple[str, int, str] | None = None,
    *,
    base: int | None = None,
) -> None:
    """Append one change of store `pk` in this batch's transaction (`row`: the record's etag,
    size and content type after it; None for a deletion)."""
    etag, size, ctype = row if row is not None else (None, None, None)
    seq = next_seq(conn, batch, pk, base)
    batch.setdefault("change_rows", []).append((pk, seq, event, key, etag, size, ctype, now_ms))


def apply_change_seqs(conn: sqlite3.Connection, batch: Batch) -> None:
    """Insert the changes this batch appended, in one statement, and move each store's
    `change_seq` past them."""
    changes = batch.get("change_rows")
    if changes:
        conn.executemany(_FEED.insert_change, changes)
    rows = [(n, pk) for pk, n in batch.get("changes", {}).items()]
    if rows:
        conn.executemany("UPDATE stores SET change_seq = change_seq + ? WHERE pk = ?", rows)


class SqliteFeed:
    """The feed's part of `SqliteMetadataIndex` (which provides the attributes below)."""

    _conn: sqlite3.Connection
    _writer: LoopWriter
    _changes_on: bool

    def _storage(self, action: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _read(self, action: str, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._storage(action):
            return self._conn.execute(sql, params).fetchall()

    async def _run(self, action: str, op: Callable[[sqlite3.Connection, Batch], Any]) -> Any:
        return await self._writer.run(action, op)

    # change feed
    async def list_changes(self, store_id: str, *, after: int, limit: int) -> ChangePage | None:
        with self._storage("read changes"):
            conn = self._conn
            conn.execute("BEGIN")
            try:
                found = conn.execute(_FEED.latest, (store_id,)).fetchone()
                if found is None:
                    return None
                pk, latest = found
                rows = conn.execute(_FEED.page, (pk, after, max(limit, 0))).fetchall()
                oldest = conn.execute(_FEED.oldest, (pk,)).fetchone()[0]
            finally:
                conn.execute("COMMIT")
            items = [change_from_row(r) for r in rows]
        return ChangePage(items, latest + 1 if oldest is None else int(oldest), int(latest))

    async def trim_changes(self, *, before_ms: int, max_rows: int) -> int:
        """Trim each store's log from its oldest change (see `trim_point`)."""
        trimmed, after = 0, -1
        while trimmed < max_rows:
            found = self._read("trim the change log", _FEED.next_log, (after,))
            if not found:
                return trimmed
            after = found[0][0]
            if trim_point(self._read("trim the change log", _FEED.oldest_changes, (after, 1)), before_ms) is None:
                continue  # this store's oldest change is young enough: nothing to trim here
            window = self._read("trim the change log", _FEED.oldest_changes, (after, max_rows - trimmed))
            last = trim_point(window, before_ms)
            if last is not None:
                await self._run("trim the change log", _trim(after, last))
                trimmed += sum(1 for seq, _ in window if seq <= last)
        return trimmed

    async def watch_changes(self, on_change: Callable[[str | None], None]) -> None:
        """Poll `PRAGMA data_version` (changed by any other connection's commit, one cheap call)."""
        last = self._data_version()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            version = self._data_version()
            if version != last:
                last = version
                on_change(None)

    def _data_version(self) -> int:
        with self._storage("watch for changes"):
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    # webhooks
    async def insert_webhook(self, webhook: Webhook) -> Webhook | None:
        def op(conn: sqlite3.Connection, batch: Batch) -> Webhook | None:
            rows = conn.execute(_FEED.insert_webhook, (*webhook_values(webhook)[:9], webhook.store_id)).fetchall()
            return webhook_from_row(rows[0]) if rows else None

        return cast(Webhook | None, await self._run("create a webhook", op))

    async def get_webhook(self, store_id: str, webhook_id: str) -> Webhook | None:
        rows = self._read("read a webhook", _FEED.get_webhook, (webhook_id, store_id))
        return webhook_from_row(rows[0]) if rows else None

    async def list_webhooks(self, store_id: str) -> list[Webhook]:
        return [webhook_from_row(r) for r in self._read("list webhooks", _FEED.list_webhooks, (store_id,))]

    async def update_webhook(
        self, store_id: str, webhook_id: str, change: Callable[[Webhook], Webhook]
    ) -> Webhook | None:
        def op(conn: sqlite3.Connection, batch: Batch) -> Webhook | None:
            found = conn.execute(_FEED.get_webhook, (webhook_id, store_id)).fetchone()
            if found is None:
                return None
            current = webhook_from_row(found)
            w = change(current)
            enabled = w.is_enabled and not current.is_enabled
            params = (w.request_url, ",".join(w.event_types), w.key_prefix, w.is_enabled, w.secret, w.modified_at,
                      enabled, webhook_id, store_id)  # fmt: skip
            rows = conn.execute(_FEED.update_webhook, params).fetchall()
            return webhook_from_row(rows[0]) if rows else None

        return cast(Webhook | None, await self._run("update a webhook", op))

    async def delete_webhook(self, store_id: str, webhook_id: str) -> bool:
        def op(conn: sqlite3.Connection, batch: Batch) -> bool:
            if not conn.execute(_FEED.delete_webhook, (webhook_id, store_id)).fetchall():
                return False
            drop_webhook_rows(conn, webhook_id)
            return True

        return cast(bool, await self._run("delete a webhook", op))

    async def webhooks_due(self, *, now_ms: int, limit: int) -> list[Webhook]:
        rows = self._read("list webhooks with work", _FEED.webhooks_due, (now_ms, now_ms, max(limit, 0)))
        return [webhook_from_row(r) for r in rows]

    async def claim_webhook(self, webhook_id: str, *, owner: str, now_ms: int, until_ms: int) -> bool:
        def op(conn: sqlite3.Connection, batch: Batch) -> bool:
            return bool(conn.execute(_FEED.claim_webhook, (owner, until_ms, webhook_id, now_ms, owner)).fetchall())

        return cast(bool, await self._run("lease a webhook", op))

    async def release_webhook(self, webhook_id: str, *, owner: str) -> None:
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            conn.execute(_FEED.release_webhook, (webhook_id, owner))

        await self._run("release a webhook", op)

    async def enqueue_deliveries(self, webhook_id: str, deliveries: list[Delivery], *, cursor: int) -> None:
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            conn.executemany(_FEED.insert_delivery, [delivery_values(d) for d in deliveries])
            conn.execute(_FEED.move_cursor, (cursor, webhook_id))

        await self._run("queue deliveries", op)

    async def next_delivery(self, webhook_id: str) -> Delivery | None:
        rows = self._read("read a delivery", _FEED.next_delivery, (webhook_id,))
        return delivery_from_row(rows[0]) if rows else None

    async def record_attempt(self, attempt: Attempt, *, next_attempt_at: int | None) -> None:
        def op(conn: sqlite3.Connection, batch: Batch) -> None:
            conn.execute(_FEED.insert_attempt, (*attempt_values(attempt), attempt.delivery_id))
            conn.execute(_FEED.keep_attempts, (attempt.webhook_id, attempt.webhook_id, ATTEMPTS_KEPT))
            if next_attempt_at is None:
                conn.execute(_FEED.end_delivery, (attempt.delivery_id,))
            else:
                conn.execute(_FEED.retry_delivery, (next_attempt_at, attempt.delivery_id))

        await self._run("log a delivery attempt", op)

    async def list_attempts(self, webhook_id: str, *, limit: int) -> list[Attempt]:
        pending = self._read("list deliveries", _FEED.pending, (webhook_id, max(limit, 0)))
        done = self._read("list deliveries", _FEED.attempts, (webhook_id, max(limit, 0)))
        rows = [pending_attempt(delivery_from_row(r)) for r in pending] + [attempt_from_row(r) for r in done]
        return rows[: max(limit, 0)]


def _trim(pk: int, last: int) -> Callable[[sqlite3.Connection, Batch], None]:
    def op(conn: sqlite3.Connection, batch: Batch) -> None:
        conn.execute(_FEED.trim, (pk, last))

    return op


def drop_webhook_rows(conn: sqlite3.Connection, webhook_id: str) -> None:
    conn.execute(_FEED.delete_deliveries, (webhook_id,))
    conn.execute(_FEED.delete_attempts, (webhook_id,))


def drop_store_feed(conn: sqlite3.Connection, store_id: str) -> None:
    """A deleted store's webhooks, deliveries and delivery log (its changes age out)."""
    for (webhook_id,) in conn.execute(_FEED.store_webhooks, (store_id,)).fetchall():
        drop_webhook_rows(conn, webhook_id)
    conn.execute("DELETE FROM webhooks WHERE store_id = ?", (store_id,))
