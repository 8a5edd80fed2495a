"""The change feed: reading a store's changes after a cursor, waiting for new ones
(long-poll), following them (Server-Sent Events), and the hub that wakes the waiters.

A waiter is woken at once by a write of its own process (the record service pokes the
hub after each acknowledged write) and, for writes of other processes and nodes, by the
index's `watch_changes` (PostgreSQL LISTEN/NOTIFY, SQLite's data_version), which the hub
runs while the process lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from kvbox.backends.base import MetadataIndex
from kvbox.core.errors import ChangesDisabledError, ChangesExpiredError, StoreNotFoundError
from kvbox.core.feed import MAX_CHANGES_PAGE, MAX_WAIT_S, Change, ChangePage
from kvbox.core.models import Permission, Store
from kvbox.service.principal import Principal
from kvbox.service.stores import Resolved, StoreService

# An idle Server-Sent Events stream gets a comment line this often, and ends after
# FOLLOW_MAX_S (clients reconnect with Last-Event-ID), so a draining server is never held.
KEEPALIVE_S = 15.0
FOLLOW_MAX_S = 300.0


class ChangeHub:
    """Wakes the tasks waiting for changes of a store (or of any store)."""

    def __init__(self, index: MetadataIndex) -> None:
        self._index = index
        self._events: dict[str, asyncio.Event] = {}
        self._any: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None

    def poke(self, store_id: str | None) -> None:
        """Changes were committed to `store_id` (None: to some store)."""
        if store_id is None:
            woken = list(self._events.values())
            self._events.clear()
        else:
            found = self._events.pop(store_id, None)
            woken = [found] if found is not None else []
        if self._any is not None:
            woken.append(self._any)
            self._any = None
        for event in woken:
            event.set()

    def waiter(self, store_id: str | None) -> asyncio.Event:
        """An event set at the next change of `store_id` (None: of any store). Take it before
        reading, so a change committed in between still wakes the reader."""
        self._watch()
        if store_id is None:
            if self._any is None:
                self._any = asyncio.Event()
            return self._any
        found = self._events.get(store_id)
        if found is None:
            found = self._events[store_id] = asyncio.Event()
        return found

    @staticmethod
    async def wait(event: asyncio.Event, timeout_s: float) -> bool:
        """Whether `event` was set within `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(timeout_s, 0))
        return event.is_set()

    def _watch(self) -> None:
        """Listen for other processes' changes from the first waiter on, in this event loop."""
        loop = asyncio.get_running_loop()
        if self._watcher is None or self._watcher.done() or self._watcher.get_loop() is not loop:
            self._watcher = loop.create_task(self._index.watch_changes(self.poke))

    async def close(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        self._watcher = None


class ChangeFeed:
    """The feed's use cases: list (and wait for) changes, follow them."""

    def __init__(self, index: MetadataIndex, stores: StoreService, hub: ChangeHub, *, enabled: bool) -> None:
        self._index = index
        self._stores = stores
        self.hub = hub
        self.enabled = enabled
        self.max_wait_s: float = MAX_WAIT_S  # tests that fuzz the API lower it

    async def resolve(self, principal: Principal, segment: str, *, signature: str | None = None) -> Resolved:
        """The store whose feed a caller reads (READ, which a storage signature also grants),
        when the feed is on."""
        if not self.enabled:
            raise ChangesDisabledError()
        return await self._stores.resolve(principal, segment, need=Permission.READ, signature=signature)

    async def changes(
        self,
        principal: Principal,
        segment: str,
        *,
        after: int,
        limit: int = MAX_CHANGES_PAGE,
        wait_s: float = 0,
        signature: str | None = None,
    ) -> tuple[list[Change], int]:
        """Up to `limit` changes after `after` and the cursor to pass next; with `wait_s`, waits
        that long for a first one. Raises `ChangesExpiredError` when changes after `after` were
        dropped by retention."""
        resolved = await self.resolve(principal, segment, signature=signature)
        return await self.read(resolved.store, after=after, limit=limit, wait_s=min(wait_s, self.max_wait_s))

    async def read(self, store: Store, *, after: int, limit: int, wait_s: float = 0) -> tuple[list[Change], int]:
        deadline = time.monotonic() + wait_s
        while True:
            waiter = self.hub.waiter(store.id) if wait_s > 0 else None
            page = await self._page(store, after, limit)
            left = deadline - time.monotonic()
            if page.items or waiter is None or left <= 0:
                return page.items, page.items[-1].sequence if page.items else after
            await self.hub.wait(waiter, left)

    async def recent(self, store: Store, *, count: int) -> tuple[list[Change], int]:
        """The store's last `count` changes still kept, newest first, and its latest sequence."""
        probe = await self._index.list_changes(store.id, after=0, limit=0)
        if probe is None:
            raise StoreNotFoundError()
        after = max(probe.latest - count, probe.oldest - 1, 0)
        page = await self._page(store, after, count)
        return list(reversed(page.items)), probe.latest

    async def _page(self, store: Store, after: int, limit: int) -> ChangePage:
        page = await self._index.list_changes(store.id, after=after, limit=limit)
        if page is None:
            raise StoreNotFoundError()
        if page.missed(after):
            raise ChangesExpiredError()
        return page

    async def follow(self, store: Store, *, after: int) -> AsyncIterator[list[Change]]:
        """Batches of changes after `after` as they commit; an empty batch after each
        KEEPALIVE_S without any. Ends after FOLLOW_MAX_S."""
        end = time.monotonic() + FOLLOW_MAX_S
        while time.monotonic() < end:
            items, after = await self.read(store, after=after, limit=MAX_CHANGES_PAGE, wait_s=KEEPALIVE_S)
            yield items
