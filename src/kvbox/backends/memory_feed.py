"""The in-memory index's change log and webhooks: the feed's contract in its simplest form.

`MemoryFeed` is mixed into `MemoryMetadataIndex`, which appends to the log as it changes
records; one process holds the data, so watching for changes of other processes is waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from kvbox.core.feed import Change, ChangePage
from kvbox.core.webhooks import ATTEMPTS_KEPT, Attempt, Delivery, Webhook, pending_attempt


class _Log:
    def __init__(self) -> None:
        self.latest = 0
        self.items: list[Change] = []


class MemoryFeed:
    """Change logs by store id, webhooks, their deliveries and delivery logs."""

    def __init__(self, *, changes: bool = True) -> None:
        self._changes_on = changes
        self._logs: dict[str, _Log] = {}
        self._webhooks: dict[str, Webhook] = {}
        self._leases: dict[str, tuple[str, int]] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._attempts: dict[str, list[Attempt]] = {}

    def _append(
        self, store_id: str, event: str, key: str, now_ms: int, row: tuple[str, int, str] | None = None
    ) -> None:
        """Append one change (record fields `row`: etag, size, content type; None: deleted)."""
        if not self._changes_on:
            return
        log = self._logs.setdefault(store_id, _Log())
        log.latest += 1
        etag, size, ctype = row if row is not None else (None, None, None)
        log.items.append(Change(log.latest, event, key, etag, size, ctype, now_ms))

    def _drop_feed(self, store_id: str) -> None:
        """A deleted store's log, webhooks, deliveries and delivery logs go with it."""
        self._logs.pop(store_id, None)
        for webhook in [w for w in self._webhooks.values() if w.store_id == store_id]:
            self._drop_webhook(webhook.id)

    # change feed
    async def list_changes(self, store_id: str, *, after: int, limit: int) -> ChangePage | None:
        if not self._has_store(store_id):
            return None
        log = self._logs.get(store_id) or _Log()
        items = [c for c in log.items if c.sequence > after][: max(limit, 0)]
        oldest = log.items[0].sequence if log.items else log.latest + 1
        return ChangePage(items, oldest, log.latest)

    async def trim_changes(self, *, before_ms: int, max_rows: int) -> int:
        """Trim each store's log from its oldest change (see feed_statements.trim_point)."""
        trimmed = 0
        for log in self._logs.values():
            while log.items and log.items[0].created_at < before_ms and trimmed < max_rows:
                log.items.pop(0)
                trimmed += 1
        return trimmed

    async def watch_changes(self, on_change: Callable[[str | None], None]) -> None:
        """No other process writes to this index: nothing to watch."""
        await asyncio.Event().wait()

    # webhooks
    async def insert_webhook(self, webhook: Webhook) -> Webhook | None:
        if not self._has_store(webhook.store_id):
            return None
        log = self._logs.get(webhook.store_id)
        webhook = dataclasses.replace(webhook, cursor=log.latest if log else 0)
        self._webhooks[webhook.id] = webhook
        return webhook

    async def get_webhook(self, store_id: str, webhook_id: str) -> Webhook | None:
        webhook = self._webhooks.get(webhook_id)
        return webhook if webhook is not None and webhook.store_id == store_id else None

    async def list_webhooks(self, store_id: str) -> list[Webhook]:
        return sorted(
            (w for w in self._webhooks.values() if w.store_id == store_id), key=lambda w: (w.created_at, w.id)
        )

    async def update_webhook(
        self, store_id: str, webhook_id: str, change: Callable[[Webhook], Webhook]
    ) -> Webhook | None:
        current = await self.get_webhook(store_id, webhook_id)
        if current is None:
            return None
        new = change(current)
        if new.is_enabled and not current.is_enabled:
            log = self._logs.get(store_id)
            new = dataclasses.replace(new, cursor=log.latest if log else 0)
        self._webhooks[webhook_id] = new
        return new

    async def delete_webhook(self, store_id: str, webhook_id: str) -> bool:
        if await self.get_webhook(store_id, webhook_id) is None:
            return False
        self._drop_webhook(webhook_id)
        return True

    def _drop_webhook(self, webhook_id: str) -> None:
        self._webhooks.pop(webhook_id, None)
        self._leases.pop(webhook_id, None)
        self._attempts.pop(webhook_id, None)
        for delivery_id in [d.id for d in self._deliveries.values() if d.webhook_id == webhook_id]:
            del self._deliveries[delivery_id]

    async def webhooks_due(self, *, now_ms: int, limit: int) -> list[Webhook]:
        due = []
        for webhook in sorted(self._webhooks.values(), key=lambda w: w.id):
            lease = self._leases.get(webhook.id)
            if not webhook.is_enabled or (lease is not None and lease[1] > now_ms):
                continue
            log = self._logs.get(webhook.store_id)
            pending = any(d.webhook_id == webhook.id and d.next_attempt_at <= now_ms for d in self._deliveries.values())
            if pending or (log is not None and log.latest > webhook.cursor):
                due.append(webhook)
        return due[: max(limit, 0)]

    async def claim_webhook(self, webhook_id: str, *, owner: str, now_ms: int, until_ms: int) -> bool:
        lease = self._leases.get(webhook_id)
        if webhook_id not in self._webhooks or (lease is not None and lease[0] != owner and lease[1] > now_ms):
            return False
        self._leases[webhook_id] = (owner, until_ms)
        return True

    async def release_webhook(self, webhook_id: str, *, owner: str) -> None:
        lease = self._leases.get(webhook_id)
        if lease is not None and lease[0] == owner:
            del self._leases[webhook_id]

    async def enqueue_deliveries(self, webhook_id: str, deliveries: list[Delivery], *, cursor: int) -> None:
        webhook = self._webhooks.get(webhook_id)
        if webhook is None:
            return
        for delivery in deliveries:
            self._deliveries[delivery.id] = delivery
        self._webhooks[webhook_id] = dataclasses.replace(webhook, cursor=max(webhook.cursor, cursor))

    async def next_delivery(self, webhook_id: str) -> Delivery | None:
        pending = [d for d in self._deliveries.values() if d.webhook_id == webhook_id]
        return min(pending, key=lambda d: d.sequence, default=None)

    async def record_attempt(self, attempt: Attempt, *, next_attempt_at: int | None) -> None:
        delivery = self._deliveries.get(attempt.delivery_id)
        if delivery is None or attempt.webhook_id not in self._webhooks:
            return
        log = self._attempts.setdefault(attempt.webhook_id, [])
        log.append(attempt)
        del log[:-ATTEMPTS_KEPT]
        if next_attempt_at is None:
            del self._deliveries[attempt.delivery_id]
        else:
            self._deliveries[delivery.id] = dataclasses.replace(
                delivery, attempts=delivery.attempts + 1, next_attempt_at=next_attempt_at
            )

    async def list_attempts(self, webhook_id: str, *, limit: int) -> list[Attempt]:
        pending = sorted(
            (d for d in self._deliveries.values() if d.webhook_id == webhook_id), key=lambda d: -d.sequence
        )
        rows = [pending_attempt(d) for d in pending] + list(reversed(self._attempts.get(webhook_id, [])))
        return rows[: max(limit, 0)]

    def _has_store(self, store_id: str) -> bool:
        raise NotImplementedError
