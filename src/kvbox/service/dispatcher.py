"""Webhook delivery: turns each webhook's matching changes into persisted deliveries and
POSTs them, in sequence order, signed, retried with backoff.

Every server process runs a dispatcher. A webhook is served by one process at a time in the
whole deployment: it first takes the webhook's lease in the index (renewed before each
attempt, so a killed node's webhooks pass to another within `LEASE_MS`). Deliveries are
persisted (with the exact body they send) before their first attempt, so a restart loses
none and a retry sends the same bytes under the same `Kvbox-Delivery-Id`. Each webhook is
served by a task of its own: a slow receiver holds up nothing but its own deliveries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from kvbox.backends.base import MetadataIndex
from kvbox.core.clock import Clock, iso_ms
from kvbox.core.errors import ChangesExpiredError, KvboxError
from kvbox.core.feed import Change
from kvbox.core.ids import new_id
from kvbox.core.models import Store, User
from kvbox.core.webhooks import (
    ATTEMPT_TIMEOUT_S,
    GIVE_UP_AFTER_MS,
    Attempt,
    Delivery,
    DeliveryStatus,
    Webhook,
    retry_delay_ms,
    sign,
)
from kvbox.service.changes import ChangeHub
from kvbox.service.metrics import WEBHOOK_DELIVERIES, Metrics
from kvbox.service.webhooks import ensure_public

log = logging.getLogger("kvbox")

LEASE_MS = 90_000  # longer than an attempt's timeout, renewed before each attempt
POLL_S = 1.0  # how often due retries and missed notifications are looked for
# Changes arriving closer together than this share one look for due webhooks: under a
# stream of writes the dispatcher queries the index some 20 times a second, not once per
# write, while a change after a quiet spell is looked at at once.
WAKE_GAP_S = 0.05
ENQUEUE_PAGE = 200
MAX_CONCURRENT = 32
MAX_ERROR_LENGTH = 300

StoreRenderer = Callable[[Store, User | None], dict[str, Any]]


def _plain_store(store: Store, owner: User | None) -> dict[str, Any]:
    return {"id": store.id, "name": store.name, "userId": store.user_id}


def payload(change: Change, store: Store, resource: dict[str, Any]) -> bytes:
    """A delivery's JSON body (extensions.md section 5)."""
    body = {
        "eventType": change.event_type,
        "createdAt": iso_ms(change.created_at),
        "userId": store.user_id,
        "eventData": {
            "storeId": store.id,
            "sequence": change.sequence,
            "key": change.key,
            "etag": f'"{change.etag}"' if change.etag else None,
            "size": change.size,
            "contentType": change.content_type,
        },
        "resource": resource,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class WebhookDispatcher:
    def __init__(
        self,
        index: MetadataIndex,
        hub: ChangeHub,
        clock: Clock,
        metrics: Metrics,
        *,
        allow_private: bool,
        retry_delay_ms: int,
        render: StoreRenderer | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._index = index
        self._hub = hub
        self._clock = clock
        self._metrics = metrics
        self._allow_private = allow_private
        self._retry_delay_ms = max(retry_delay_ms, 1)
        self.render: StoreRenderer = render or _plain_store
        self._transport = transport
        self.owner = new_id()  # this process, as a lease holder
        self._active: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Serve due webhooks for the life of the process: at once after a change, and at
        least every POLL_S for retries that fell due."""
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(transport=self._transport, follow_redirects=False, trust_env=False) as client:
            try:
                while True:
                    woken = self._hub.waiter(None)
                    looked = loop.time()
                    try:
                        await self.dispatch_due(client)
                    except Exception as exc:
                        log.warning("webhook dispatch failed (%s); retrying", exc)
                    await self._hub.wait(woken, POLL_S)
                    gap = WAKE_GAP_S - (loop.time() - looked)
                    if gap > 0:
                        await asyncio.sleep(gap)
            finally:
                for task in self._active.values():
                    task.cancel()
                await asyncio.gather(*self._active.values(), return_exceptions=True)

    async def dispatch_due(self, client: httpx.AsyncClient) -> None:
        """Start serving each due webhook this process is not serving yet."""
        room = MAX_CONCURRENT - len(self._active)
        if room <= 0:
            return
        for webhook in await self._index.webhooks_due(now_ms=self._clock.now_ms(), limit=room):
            if webhook.id not in self._active and len(self._active) < MAX_CONCURRENT:
                task = asyncio.get_running_loop().create_task(self._serve(client, webhook))
                self._active[webhook.id] = task
                task.add_done_callback(self._forget(webhook.id))

    async def settle(self) -> None:
        """Wait until the webhooks being served now are done (tests, shutdown)."""
        while self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)

    def _forget(self, webhook_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_: asyncio.Task[None]) -> None:
            self._active.pop(webhook_id, None)

        return done

    async def _claim(self, webhook_id: str) -> bool:
        now = self._clock.now_ms()
        return await self._index.claim_webhook(webhook_id, owner=self.owner, now_ms=now, until_ms=now + LEASE_MS)

    async def _serve(self, client: httpx.AsyncClient, webhook: Webhook) -> None:
        """Under the webhook's lease: queue its new changes and attempt its due deliveries in
        order, until none is due."""
        if not await self._claim(webhook.id):
            return
        try:
            while await self._claim(webhook.id):
                current = await self._index.get_webhook(webhook.store_id, webhook.id)
                if current is None or not current.is_enabled:
                    return
                queued = await self._enqueue(current)
                delivery = await self._index.next_delivery(webhook.id)
                if delivery is None:
                    if not queued:
                        return
                    continue
                if delivery.next_attempt_at > self._clock.now_ms():
                    return
                if not await self._attempt(client, current, delivery):
                    return  # retried once due, by whichever process holds the lease then
        except Exception as exc:
            log.warning("webhook %s: delivery failed (%s); retrying", webhook.id, exc)
        finally:
            await self._index.release_webhook(webhook.id, owner=self.owner)

    async def _enqueue(self, webhook: Webhook) -> bool:
        """Persist deliveries for the webhook's matching changes after its cursor; returns
        whether the cursor moved."""
        try:
            page = await self._index.list_changes(webhook.store_id, after=webhook.cursor, limit=ENQUEUE_PAGE)
        except ChangesExpiredError:
            return False
        if page is None or (not page.items and page.oldest <= webhook.cursor + 1):
            return False
        store = await self._index.get_store(webhook.store_id)
        if store is None:
            return False
        owner = await self._index.get_user(store.user_id)
        resource = self.render(store, owner)
        now = self._clock.now_ms()
        deliveries = [
            Delivery(new_id(), webhook.id, c.sequence, c.event_type, payload(c, store, resource), c.created_at, now)
            for c in page.items
            if webhook.matches(c.event_type, c.key)
        ]
        # Changes that fell off the log before they were queued are skipped (the cursor jumps).
        cursor = page.items[-1].sequence if page.items else page.oldest - 1
        await self._index.enqueue_deliveries(webhook.id, deliveries, cursor=cursor)
        return True

    async def _attempt(self, client: httpx.AsyncClient, webhook: Webhook, delivery: Delivery) -> bool:
        """POST one delivery and log the attempt; returns whether it succeeded."""
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            if not self._allow_private:
                await ensure_public(webhook.request_url)
            status = await self._post(client, webhook, delivery)
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except KvboxError as exc:
            error = exc.message
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration = int((time.monotonic() - started) * 1000)
        await self._log(webhook, delivery, status, duration, error)
        return error is None

    async def _post(self, client: httpx.AsyncClient, webhook: Webhook, delivery: Delivery) -> int:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "kvbox-webhooks",
            "Kvbox-Webhook-Id": webhook.id,
            "Kvbox-Delivery-Id": delivery.id,
            "Kvbox-Signature": sign(webhook.secret, int(time.time()), delivery.body),
        }
        request = client.build_request(
            "POST", webhook.request_url, content=delivery.body, headers=headers, timeout=ATTEMPT_TIMEOUT_S
        )
        # Only the status counts: the answer's body is never read.
        response = await asyncio.wait_for(client.send(request, stream=True), ATTEMPT_TIMEOUT_S)
        await response.aclose()
        return response.status_code

    async def _log(
        self, webhook: Webhook, delivery: Delivery, status: int | None, duration: int, error: str | None
    ) -> None:
        now = self._clock.now_ms()
        attempt_no = delivery.attempts + 1
        outcome = DeliveryStatus.SUCCEEDED if error is None else DeliveryStatus.FAILED
        next_at: int | None = None
        if error is not None and now - delivery.created_at < GIVE_UP_AFTER_MS:
            next_at = now + retry_delay_ms(attempt_no, self._retry_delay_ms)
        attempt = Attempt(delivery.id, webhook.id, delivery.sequence, delivery.event_type, attempt_no, outcome,
                          status, duration, error[:MAX_ERROR_LENGTH] if error else None, now)  # fmt: skip
        await self._index.record_attempt(attempt, next_attempt_at=next_at)
        label = "succeeded" if error is None else ("retried" if next_at is not None else "failed")
        self._metrics.counter(WEBHOOK_DELIVERIES).inc(label)
