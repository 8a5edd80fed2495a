"""The PostgreSQL index's change log and webhooks.

Record writes log their changes inside `kvbox_put_record` and the delete statements
(schema.py, metadata.py), each in its write's one round trip; the housekeeping statements
that remove rows log theirs here (`_log_removed`), in their own transaction. Every change
notifies the channel `kvbox_channel()`; `watch_changes` LISTENs on it over a connection of
its own, so a long-poll on one node wakes as soon as another node commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

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
from kvbox.backends.postgres.schema import CHANNEL_SQL
from kvbox.backends.statements import Dialect
from kvbox.core.feed import ChangePage
from kvbox.core.webhooks import ATTEMPTS_KEPT, Attempt, Delivery, Webhook, pending_attempt

_FEED = FeedStatements(Dialect(param="%s", greatest="greatest", token_order="seq"))
# Rows removed by housekeeping (store pk, key) as changes: each store's change_seq moves past
# them (its row is locked by the caller's transaction already), numbered in the given order.
_LOG_REMOVED = f"""
WITH c AS (SELECT * FROM unnest(%s::bigint[], %s::text[]) WITH ORDINALITY AS c(store_pk, key, n)),
t AS (SELECT store_pk, count(*) AS n FROM c GROUP BY store_pk),
u AS (
    UPDATE stores AS s SET change_seq = s.change_seq + t.n FROM t WHERE s.pk = t.store_pk
    RETURNING s.pk, s.id, s.change_seq - t.n AS base
),
i AS (
    INSERT INTO changes (store_pk, seq, event_type, key, created_at)
    SELECT c.store_pk, u.base + row_number() OVER (PARTITION BY c.store_pk ORDER BY c.n), %s, c.key, %s
    FROM c JOIN u ON u.pk = c.store_pk
)
SELECT pg_notify({CHANNEL_SQL}, u.id) FROM u
"""
_PAGE = f"""
SELECT s.pk, s.change_seq, (SELECT min(seq) FROM changes WHERE store_pk = s.pk), c.*
FROM stores AS s LEFT JOIN LATERAL (
    SELECT {", ".join("c." + col for col in ("seq", "event_type", "key", "etag", "size", "content_type", "created_at"))}
    FROM changes AS c WHERE c.store_pk = s.pk AND c.seq > %s ORDER BY c.seq LIMIT %s
) AS c ON true WHERE s.id = %s
"""
RECONNECT_S = 1.0
log = logging.getLogger("kvbox")


class PostgresFeed:
    """The feed's part of `PostgresMetadataIndex` (which provides the attributes below)."""

    url: str
    _connect_args: dict[str, Any]

    def _conn(self, action: str) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError

    async def _all(self, action: str, query: str, params: Any = None) -> list[Any]:
        raise NotImplementedError

    async def _log_removed(self, conn: AsyncConnection, event: str, rows: list[tuple[int, str]], now_ms: int) -> None:
        """Log the rows this transaction removed as changes `event` (unless the feed is off)."""
        if rows:
            cur = await conn.execute("SELECT kvbox_changes_on()")
            on = await cur.fetchone()
            if on and on[0]:
                await conn.execute(_LOG_REMOVED, ([pk for pk, _ in rows], [key for _, key in rows], event, now_ms))

    # change feed
    async def list_changes(self, store_id: str, *, after: int, limit: int) -> ChangePage | None:
        rows = await self._all("read changes", _PAGE, (after, max(limit, 0), store_id))
        if not rows:
            return None
        _, latest, oldest = rows[0][:3]
        items = [change_from_row(r[3:]) for r in rows if r[3] is not None]
        return ChangePage(items, latest + 1 if oldest is None else int(oldest), int(latest))

    async def trim_changes(self, *, before_ms: int, max_rows: int) -> int:
        """Trim each store's log from its oldest change (see `trim_point`)."""
        trimmed, after = 0, -1
        while trimmed < max_rows:
            found = await self._all("trim the change log", _FEED.next_log, (after,))
            if not found:
                return trimmed
            after = found[0][0]
            if trim_point(await self._all("trim the change log", _FEED.oldest_changes, (after, 1)), before_ms) is None:
                continue  # this store's oldest change is young enough: nothing to trim here
            window = await self._all("trim the change log", _FEED.oldest_changes, (after, max_rows - trimmed))
            last = trim_point(window, before_ms)
            if last is not None:
                async with self._conn("trim the change log") as conn:
                    await conn.execute(_FEED.trim, (after, last))
                trimmed += sum(1 for seq, _ in window if seq <= last)
        return trimmed

    async def watch_changes(self, on_change: Callable[[str | None], None]) -> None:
        """LISTEN on the feed's channel; after a lost connection, reconnect and report a change
        of some store (one may have been missed meanwhile)."""
        while True:
            try:
                async for store_id in self._notifications():
                    on_change(store_id)
            except (psycopg.Error, OSError) as exc:
                log.warning("change notifications interrupted (%s); reconnecting", exc)
            await asyncio.sleep(RECONNECT_S)

    async def _notifications(self) -> AsyncIterator[str | None]:
        async with await AsyncConnection.connect(self.url, **self._connect_args) as conn:
            cur = await conn.execute("SELECT kvbox_channel()")
            row = await cur.fetchone()
            channel = str(row[0]) if row else "kvbox_changes"
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield None
            async for notify in conn.notifies():
                yield notify.payload or None

    # webhooks
    async def insert_webhook(self, webhook: Webhook) -> Webhook | None:
        rows = await self._all(
            "create a webhook", _FEED.insert_webhook, (*webhook_values(webhook)[:9], webhook.store_id)
        )
        return webhook_from_row(rows[0]) if rows else None

    async def get_webhook(self, store_id: str, webhook_id: str) -> Webhook | None:
        rows = await self._all("read a webhook", _FEED.get_webhook, (webhook_id, store_id))
        return webhook_from_row(rows[0]) if rows else None

    async def list_webhooks(self, store_id: str) -> list[Webhook]:
        return [webhook_from_row(r) for r in await self._all("list webhooks", _FEED.list_webhooks, (store_id,))]

    async def update_webhook(
        self, store_id: str, webhook_id: str, change: Callable[[Webhook], Webhook]
    ) -> Webhook | None:
        async with self._conn("update a webhook") as conn, conn.transaction():
            cur = await conn.execute(_FEED.get_webhook + " FOR UPDATE", (webhook_id, store_id))
            found = await cur.fetchone()
            if found is None:
                return None
            current = webhook_from_row(found)
            w = change(current)
            enabled = w.is_enabled and not current.is_enabled
            params = (w.request_url, ",".join(w.event_types), w.key_prefix, w.is_enabled, w.secret, w.modified_at,
                      enabled, webhook_id, store_id)  # fmt: skip
            cur = await conn.execute(_FEED.update_webhook, params)
            row = await cur.fetchone()
            return webhook_from_row(row) if row else None

    async def delete_webhook(self, store_id: str, webhook_id: str) -> bool:
        # Its deliveries and delivery log go with it (ON DELETE CASCADE).
        return bool(await self._all("delete a webhook", _FEED.delete_webhook, (webhook_id, store_id)))

    async def webhooks_due(self, *, now_ms: int, limit: int) -> list[Webhook]:
        rows = await self._all("list webhooks with work", _FEED.webhooks_due, (now_ms, now_ms, max(limit, 0)))
        return [webhook_from_row(r) for r in rows]

    async def claim_webhook(self, webhook_id: str, *, owner: str, now_ms: int, until_ms: int) -> bool:
        params = (owner, until_ms, webhook_id, now_ms, owner)
        return bool(await self._all("lease a webhook", _FEED.claim_webhook, params))

    async def release_webhook(self, webhook_id: str, *, owner: str) -> None:
        async with self._conn("release a webhook") as conn:
            await conn.execute(_FEED.release_webhook, (webhook_id, owner))

    async def enqueue_deliveries(self, webhook_id: str, deliveries: list[Delivery], *, cursor: int) -> None:
        async with self._conn("queue deliveries") as conn, conn.transaction():
            if deliveries:
                async with conn.cursor() as cur:
                    await cur.executemany(_FEED.insert_delivery, [delivery_values(d) for d in deliveries])
            await conn.execute(_FEED.move_cursor, (cursor, webhook_id))

    async def next_delivery(self, webhook_id: str) -> Delivery | None:
        rows = await self._all("read a delivery", _FEED.next_delivery, (webhook_id,))
        return delivery_from_row(rows[0]) if rows else None

    async def record_attempt(self, attempt: Attempt, *, next_attempt_at: int | None) -> None:
        async with self._conn("log a delivery attempt") as conn, conn.transaction():
            await conn.execute(_FEED.insert_attempt, (*attempt_values(attempt), attempt.delivery_id))
            await conn.execute(_FEED.keep_attempts, (attempt.webhook_id, attempt.webhook_id, ATTEMPTS_KEPT))
            if next_attempt_at is None:
                await conn.execute(_FEED.end_delivery, (attempt.delivery_id,))
            else:
                await conn.execute(_FEED.retry_delivery, (next_attempt_at, attempt.delivery_id))

    async def list_attempts(self, webhook_id: str, *, limit: int) -> list[Attempt]:
        pending = await self._all("list deliveries", _FEED.pending, (webhook_id, max(limit, 0)))
        done = await self._all("list deliveries", _FEED.attempts, (webhook_id, max(limit, 0)))
        rows = [pending_attempt(delivery_from_row(r)) for r in pending] + [attempt_from_row(r) for r in done]
        return rows[: max(limit, 0)]
