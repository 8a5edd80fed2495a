"""The services bundle: built once per process from Settings, no ambient globals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.backends.registry import open_backend
from kvbox.core.clock import Clock, SystemClock
from kvbox.service.principal import Authenticator
from kvbox.service.records import RecordService
from kvbox.service.settings import Settings
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
        """Runs for the life of a server process: flush counters, reclaim deleted stores."""
        interval = max(0.05, self.settings.stats_flush_interval)
        with contextlib.suppress(Exception):
            await self.collect_orphans()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.stats.flush()
                while await self.housekeeping() >= PURGE_BATCH:
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
        index, blobs = open_backend(settings.backend, data_dir=settings.data_dir, durable=settings.durable)
    stats = StatsBuffer(index)
    users = UserDirectory(index)
    stores = StoreService(index, clock, stats, users)
    records = RecordService(
        index,
        blobs,
        stores,
        stats,
        clock,
        max_record_size=settings.max_record_size,
        inline_threshold=settings.inline_threshold,
    )
    return Services(
        settings=settings,
        clock=clock,
        index=index,
        blobs=blobs,
        auth=Authenticator(index),
        stores=stores,
        records=records,
        users=UserService(index, clock),
        stats=stats,
    )
