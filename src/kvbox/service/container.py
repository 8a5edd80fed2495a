"""The services bundle: built once per process from Settings, no ambient globals."""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.clock import Clock, SystemClock
from kvbox.service.changes import ChangeFeed, ChangeHub
from kvbox.service.deployment import open_storage
from kvbox.service.dispatcher import WebhookDispatcher
from kvbox.service.housekeeping import Housekeeper
from kvbox.service.metrics import (
    CACHE_LOOKUPS,
    GROUP_COMMIT,
    HOUSEKEEPING,
    RATE_LIMITED,
    Metrics,
    Snapshot,
    histogram_of,
)
from kvbox.service.principal import Authenticator
from kvbox.service.ratelimit import Limits, RateLimiter
from kvbox.service.readcache import Freshness, ReadCache
from kvbox.service.readiness import Readiness
from kvbox.service.records import RecordService
from kvbox.service.retention import RetentionService
from kvbox.service.settings import Settings, parse_duration_ms
from kvbox.service.sharing import SharingService
from kvbox.service.stats import StatsBuffer
from kvbox.service.stores import StoreService, UserDirectory
from kvbox.service.users import UserService
from kvbox.service.webhooks import WebhookService


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
    metrics: Metrics
    readiness: Readiness
    changes: ChangeFeed
    webhooks: WebhookService
    dispatcher: WebhookDispatcher
    freshness: Freshness

    async def close(self) -> None:
        await self.changes.hub.close()
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
    hub = ChangeHub(index)
    freshness = Freshness(index)
    cache = ReadCache(index, metadata_only=True, freshness=freshness)
    record_cache = ReadCache(index, freshness=freshness, second_miss=True, max_bytes=settings.record_cache_size)
    stores = StoreService(index, clock, stats, users, limiter, cache)
    auth = Authenticator(index, cache)
    records = RecordService(
        index,
        blobs,
        stores,
        stats,
        clock,
        max_record_size=settings.max_record_size,
        inline_threshold=settings.inline_threshold,
        cache=record_cache,
        hub=hub if settings.changes else None,
        auth=auth,
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
        changes_retention_ms=parse_duration_ms(settings.changes_retention),
        on_change=hub.poke,
    )
    metrics = _metrics(settings, index, limiter, {"metadata": cache, "records": record_cache}, housekeeper)
    return Services(
        settings=settings,
        clock=clock,
        index=index,
        blobs=blobs,
        auth=auth,
        stores=stores,
        records=records,
        users=UserService(index, clock),
        stats=stats,
        sharing=SharingService(index, stores, clock),
        retention=retention,
        limiter=limiter,
        housekeeper=housekeeper,
        metrics=metrics,
        readiness=Readiness(index, blobs),
        changes=ChangeFeed(index, stores, hub, enabled=settings.changes),
        webhooks=WebhookService(
            index, stores, clock, enabled=settings.changes, allow_private=settings.webhook_allow_private
        ),
        dispatcher=WebhookDispatcher(
            index,
            hub,
            clock,
            metrics,
            allow_private=settings.webhook_allow_private,
            retry_delay_ms=parse_duration_ms(settings.webhook_retry_delay),
        ),
        freshness=freshness,
    )


def _metrics(
    settings: Settings,
    index: MetadataIndex,
    limiter: RateLimiter,
    caches: dict[str, ReadCache],
    housekeeper: Housekeeper,
) -> Metrics:
    """The process's metrics, reading the plain counters the services keep."""
    metrics = Metrics(enabled=settings.metrics, directory=settings.metrics_dir, totals=index.totals)

    def counts(snap: Snapshot) -> None:
        for limit, refused in limiter.refused.items():
            snap.add(RATE_LIMITED, (limit,), refused)
        for name, cache in caches.items():
            snap.add(CACHE_LOOKUPS, (name, "hit"), cache.hits)
            snap.add(CACHE_LOOKUPS, (name, "miss"), cache.misses)
        for work, done in housekeeper.work.items():
            snap.add(HOUSEKEEPING, (work,), done)
        sizes = index.group_commit_sizes()
        if sizes:
            snap.add_buckets(GROUP_COMMIT, (), histogram_of(sizes, GROUP_COMMIT.bounds))

    metrics.watch(counts)
    return metrics
