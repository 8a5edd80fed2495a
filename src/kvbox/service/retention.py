"""Retention: unnamed stores expire a set time after their last write or access.

Named stores are never deleted by retention. Deleting a store is one atomic index change
(the store and its records vanish together); rows and blobs are reclaimed afterwards by
housekeeping, so a crash mid-sweep leaves no half-deleted store, and the next pass goes on.
"""

from __future__ import annotations

from kvbox.backends.base import MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.models import Store
from kvbox.service.stats import StatsBuffer

SWEEP_BATCH = 100


class RetentionService:
    def __init__(self, index: MetadataIndex, clock: Clock, stats: StatsBuffer, *, retention_ms: int) -> None:
        self._index = index
        self._clock = clock
        self._stats = stats
        self.retention_ms = retention_ms

    def expires_at(self, store: Store) -> int | None:
        """When an unnamed store will be deleted if nobody touches it; None for named stores."""
        if store.name is not None:
            return None
        return max(store.accessed_at, store.modified_at) + self.retention_ms

    async def sweep(self, *, max_stores: int = SWEEP_BATCH) -> int:
        """Delete up to `max_stores` expired unnamed stores; return how many went."""
        await self._stats.flush()  # counts only the latest access this process has seen
        cutoff = self._clock.now_ms() - self.retention_ms
        deleted = 0
        for store_id in await self._index.list_expired_stores(accessed_before=cutoff, limit=max_stores):
            # The index re-checks in the delete's own transaction: a store named or used since
            # the listing is kept.
            if await self._index.delete_store(store_id, expired_before=cutoff):
                deleted += 1
        return deleted
