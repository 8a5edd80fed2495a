"""The services bundle: built once per process from Settings, no ambient globals."""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.clock import Clock, SystemClock
from kvbox.service.deployment import open_storage
from kvbox.service.housekeeping import Housekeeper
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


@dataclass
class Services:
    """Every service of one process, over one deployment's index and blob store."""

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
    housekeeper: Housekeeper

    async def close(self) -> None:
        try:
            await self.stats.try_flush()  # a full or unreachable index loses these counts, not the shutdown
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
    retention = RetentionService(index, clock, stats, retention_ms=parse_duration_ms(settings.unnamed_retention))
    housekeeper = Housekeeper(
        index,
        blobs,
        clock,
        stats,
        retention,
        flush_interval_s=settings.stats_flush_interval,
        sweep_interval_s=settings.sweep_interval,
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
        retention=retention,
        limiter=limiter,
        housekeeper=housekeeper,
    )
