"""The services bundle: built once per process from Settings, no ambient globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.clock import Clock, SystemClock
from kvbox.service.deployment import open_storage
from kvbox.service.principal import Authenticator
from kvbox.service.ratelimit import Limits, RateLimiter
from kvbox.service.readcache import ReadCache
from kvbox.service.records import RecordService
from kvbox.service.retention import RetentionService
from kvbox.service.settings import Settings, parse_duration_ms
from kvbox.service.sharing import SharingService
from kvbox.service.stats import StatsBuffer
from kvbox.service.stores import StoreService, UserDirectory
from kvbox.service.users import UserService

log = logging.getLogger("kvbox")

ORPHAN_MIN_AGE_MS = 15 * 60 * 1000
PURGE_BATCH = 500


@dataclass
class Services:
    settings: Settings
    clock: Clock
    index: MetadataIndex
    blobs: BlobStore
    auth: Authenticator
    stores: StoreService
    records: RecordService
    users: UserService
    stats: StatsBuffer
    sharing: SharingService
    retention: RetentionService
    limiter: RateLimiter

    async def housekeeping(self) -> int:
        """One bounded pass: reclaim rows and blobs of deleted stores. Returns blobs freed."""
        freed = await self.index.purge_deleted(max_rows=PURGE_BATCH)
        for blob_id in freed:
            await self.blobs.delete(blob_id)
        return len(freed)

    async def collect_orphans(self) -> int:
        """Delete blobs no record points to (left by a crash between blob write and commit)."""
        cutoff = self.clock.now_ms() - ORPHAN_MIN_AGE_MS
        removed = 0
        batch: list[str] = []
        async for blob_id in self.blobs.list_ids(older_than_ms=cutoff):
            batch.append(blob_id)
            if len(batch) >= 500:
                removed += await self._drop_unreferenced(batch)
                batch = []
        if batch:
            removed += await self._drop_unreferenced(batch)
        return removed

    async def _drop_unreferenced(self, batch: list[str]) -> int:
        keep = await self.index.referenced_blob_ids(batch)
        gone = [b for b in batch if b not in keep]
        for blob_id in gone:
            await self.blobs.delete(blob_id)
        return len(gone)

    async def background(self) -> None:
        """Runs for the life of a server process: flush counters, sweep expired stores,
        reclaim deleted ones. Each pass does bounded work and yields between batches."""
        interval = max(0.05, self.settings.stats_flush_interval)
        sweep_every = self.settings.sweep_interval
        next_sweep = self.clock.now_ms()
        next_orphans = self.clock.now_ms() + ORPHAN_MIN_AGE_MS
        with contextlib.suppress(Exception):
            await self.collect_orphans()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.stats.flush()
                if sweep_every > 0 and self.clock.now_ms() >= next_sweep:
                    next_sweep = self.clock.now_ms() + int(sweep_every * 1000)
                    # One node at a time: the lock is a PostgreSQL advisory lock when nodes share one.
                    async with self.index.exclusive("kvbox-sweeper") as leader:
                        while leader and await self.retention.sweep() > 0:
                            await asyncio.sleep(0)
                        # Blobs a crashed writer left behind, also on nodes that never restart.
                        if leader and self.clock.now_ms() >= next_orphans:
                            next_orphans = self.clock.now_ms() + ORPHAN_MIN_AGE_MS
                            await self.collect_orphans()
                # A bounded number of purge batches per tick, yielding to requests in between.
                for _ in range(20):
                    await self.housekeeping()
                    if not await self.index.purge_pending():
                        break
                    await asyncio.sleep(0)
            except Exception:
                log.exception("background housekeeping failed; retrying")

    async def close(self) -> None:
        try:
            await self.stats.flush()
        finally:
            await self.index.close()
            await self.blobs.close()


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    index: MetadataIndex | None = None,
    blobs: BlobStore | None = None,
) -> Services:
    clock = clock or SystemClock()
    if index is None or blobs is None:
        index, blobs = open_storage(settings)
    stats = StatsBuffer(index)
    users = UserDirectory(index)
    limits = Limits(
        enabled=settings.rate_limits,
        store_per_second=settings.rate_limit_store,
        records_per_second=settings.rate_limit_records,
        user_per_second=settings.rate_limit_user,
    )
    limiter = RateLimiter(clock, limits, processes=settings.workers)
    cache = ReadCache(index, metadata_only=True)
    stores = StoreService(index, clock, stats, users, limiter, cache)
    records = RecordService(
        index,
        blobs,
        stores,
        stats,
        clock,
        max_record_size=settings.max_record_size,
        inline_threshold=settings.inline_threshold,
        cache=ReadCache(index),
    )
    return Services(
        settings=settings,
        clock=clock,
        index=index,
        blobs=blobs,
        auth=Authenticator(index, cache),
        stores=stores,
        records=records,
        users=UserService(index, clock),
        stats=stats,
        sharing=SharingService(index, stores, clock),
        retention=RetentionService(index, clock, stats, retention_ms=parse_duration_ms(settings.unnamed_retention)),
        limiter=limiter,
    )
