"""The record sweeper: reclaims the rows, files and S3 objects of expired records.

Readers stop seeing a record at its expiry instant (core/expiry.py); its space comes back
later, here, in bounded batches that yield to requests in between, and the store's record
count and storage bytes drop with it. Two kinds of work:

- records with their own expiry are found through the index on the expiry time, oldest
  first, across all stores;
- records that a store's rules expire (and those hidden by rules since replaced) are found
  by walking each such store's keys window by window. A walk that went through a whole
  store also lets the store forget the replaced rule sets it started after: nothing they
  hid is left.

Every step commits on its own and is idempotent, so a crash mid-way loses nothing: the index
keeps the ids of blobs whose rows it deleted until the blobs are gone too (`drop_freed`
finishes what a crash interrupted), and the next pass goes on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.expiry import forget_retired
from kvbox.core.models import Visibility
from kvbox.core.pacing import Pacer

# Rows of the first transaction; then the pacer sizes them to take about half a millisecond,
# so that a record write sharing the transaction (SQLite's group commit) or waiting for the
# store's row lock (PostgreSQL) is hardly delayed.
EXPIRED_BATCH = 100
# Keys walked per transaction in a store with expiry rules.
WALK_WINDOW = 500
STORES_PAGE = 100


@dataclass(slots=True)
class _Walk:
    """Where the walk through one store is, and when it started."""

    after: str | None
    started_at: int


class RecordSweeper:
    def __init__(self, index: MetadataIndex, blobs: BlobStore, clock: Clock, *, rewalk_ms: int) -> None:
        self._index = index
        self._blobs = blobs
        self._clock = clock
        self._rewalk_ms = rewalk_ms  # a store's walks start at most this often
        self._walks: dict[str, _Walk] = {}
        self._last_walk: dict[str, int] = {}
        self._pacer = Pacer(EXPIRED_BATCH)

    async def reclaim_due(self, *, budget_s: float = 0.5) -> int:
        """Reclaim records whose own expiry has passed, batch by batch, for about `budget_s`
        (at least one batch). Returns how many went."""
        deadline = time.monotonic() + budget_s
        total = 0
        pacer = self._pacer
        pacer.start()
        while True:
            size = pacer.size
            count, blob_ids = await self._index.reclaim_expired(now_ms=self._clock.now_ms(), max_rows=size)
            await self._drop(blob_ids)
            total += count
            if count < size or time.monotonic() >= deadline:
                return total
            await pacer.pause(count)

    async def walk_stores(self, *, max_windows: int = 20, now: bool = False) -> int:
        """Walk up to `max_windows` key windows of stores with expiry rules, one window per store
        in turn, and reclaim what the rules have expired. A store's next walk starts `rewalk_ms`
        after its last one started, or at once with `now`. Returns how many records went."""
        total = windows = 0
        pacer = Pacer()
        while windows < max_windows:
            progressed = False
            async for store_id in self._expiring_stores():
                if windows >= max_windows:
                    break
                reclaimed = await self._step(store_id, now=now)
                if reclaimed is not None:
                    total, windows, progressed = total + reclaimed, windows + 1, True
                    await pacer.pause()
            if not progressed:
                break
        return total

    async def _expiring_stores(self) -> AsyncIterator[str]:
        after: str | None = None
        while True:
            store_ids = await self._index.list_expiring_stores(after=after, limit=STORES_PAGE)
            for store_id in store_ids:
                yield store_id
            if len(store_ids) < STORES_PAGE:
                return
            after = store_ids[-1]

    async def sweep_all(self) -> int:
        """Reclaim everything expired now, walking every store with rules to its end (for
        `kvbox sweep`). Returns how many records went."""
        await self.drop_freed()
        total = 0
        while (count := await self.reclaim_due(budget_s=5.0)) > 0:
            total += count
        total += await self.walk_stores(max_windows=100, now=True)
        while self._walks:  # each call moves every walk under way on by at least one window
            total += await self.walk_stores(max_windows=100)
        return total

    async def _step(self, store_id: str, *, now: bool) -> int | None:
        """One window of the walk through a store; None when the store is not due for a walk."""
        at = self._clock.now_ms()
        walk = self._walks.get(store_id)
        if walk is None:
            if not now and at - self._last_walk.get(store_id, at - self._rewalk_ms) < self._rewalk_ms:
                return None
            walk = self._walks[store_id] = _Walk(None, at)
            self._last_walk[store_id] = at
        store = await self._index.get_store(store_id)
        if store is None:
            self._forget(store_id)
            return None
        count, blob_ids, last = await self._index.reclaim_store_expired(
            store_id, Visibility(at, store.record_expiry), after=walk.after, max_keys=WALK_WINDOW
        )
        await self._drop(blob_ids)
        walk.after = last
        if last is None:  # through the whole store
            del self._walks[store_id]
            if any(r.retired_at < walk.started_at for r in store.record_expiry.retired):
                started = walk.started_at
                await self._index.update_record_expiry(store_id, lambda e: forget_retired(e, started))
        return count

    def _forget(self, store_id: str) -> None:
        self._walks.pop(store_id, None)
        self._last_walk.pop(store_id, None)

    async def drop_freed(self, *, batch: int = 500) -> int:
        """Delete blobs whose rows were reclaimed but whose deletion a crash interrupted."""
        dropped = 0
        while blob_ids := await self._index.freed_blobs(limit=batch):
            await self._drop(blob_ids)
            dropped += len(blob_ids)
            if len(blob_ids) < batch:
                break
        return dropped

    async def _drop(self, blob_ids: list[str]) -> None:
        """Delete the blobs of rows just reclaimed, then let the index forget them."""
        for blob_id in blob_ids:
            await self._blobs.delete(blob_id)
        await self._index.forget_freed_blobs(blob_ids)
