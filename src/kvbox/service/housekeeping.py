"""Background work of a server process: flush counters, sweep expired stores and records,
reclaim space.

Reclaiming is bounded per call and yields between batches, so requests keep flowing while a
large deleted store or prefix is purged. On a shared PostgreSQL index one node at a time
sweeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.errors import InsufficientStorageError, StorageUnavailableError
from kvbox.core.pacing import Pacer
from kvbox.service.retention import RetentionService
from kvbox.service.stats import StatsBuffer
from kvbox.service.sweeper import RecordSweeper

log = logging.getLogger("kvbox")

# A blob younger than this may belong to a write about to commit: orphan collection spares it.
ORPHAN_MIN_AGE_MS = 15 * 60 * 1000
PURGE_BATCH = 500
ORPHAN_BATCH = 500
# Purge batches per background tick, yielding to requests in between.
PURGES_PER_TICK = 20
SWEEPER_LOCK = "kvbox-sweeper"
RECORD_SWEEPER_LOCK = "kvbox-record-sweeper"
# Time per background tick spent reclaiming records whose own expiry passed, and key windows
# walked in stores with expiry rules.
EXPIRED_BUDGET_S = 0.5
WALK_WINDOWS_PER_TICK = 20
# Changes dropped by retention per transaction, and transactions per sweep.
TRIM_BATCH = 1000
TRIMS_PER_SWEEP = 50


class Housekeeper:
    def __init__(
        self,
        index: MetadataIndex,
        blobs: BlobStore,
        clock: Clock,
        stats: StatsBuffer,
        retention: RetentionService,
        *,
        flush_interval_s: float,
        sweep_interval_s: float,
        sweeper: RecordSweeper | None = None,
        changes_retention_ms: int | None = None,
        on_change: Callable[[str | None], None] | None = None,
    ) -> None:
        self.sweeper = sweeper or RecordSweeper(index, blobs, clock, rewalk_ms=int(sweep_interval_s * 1000))
        self._index = index
        self._blobs = blobs
        self._clock = clock
        self._stats = stats
        self._retention = retention
        self._flush_interval_s = max(0.05, flush_interval_s)
        self._sweep_interval_s = sweep_interval_s
        self._failing = _FailureLog()
        self._changes_retention_ms = changes_retention_ms
        self._on_change = on_change
        # Work done so far (read by the metrics).
        self.work = {"expired_stores": 0, "expired_records": 0, "reclaimed_blobs": 0, "orphaned_blobs": 0,
                     "trimmed_changes": 0}  # fmt: skip

    async def reclaim(self) -> int:
        """One bounded pass: reclaim rows and blobs of deleted stores. Returns blobs freed."""
        freed = await self._index.purge_deleted(max_rows=PURGE_BATCH)
        if freed:
            self._changed()
        for blob_id in freed:
            await self._blobs.delete(blob_id)
        await self._index.forget_freed_blobs(freed)
        self.work["reclaimed_blobs"] += len(freed)
        return len(freed)

    async def sweep_records(self) -> int:
        """One bounded pass of the record sweeper, if this node holds its lock: reclaim expired
        records (their own expiry, then store rules). Returns how many went."""
        async with self._index.exclusive(RECORD_SWEEPER_LOCK) as leader:
            if not leader:
                return 0
            due = await self.sweeper.reclaim_due(budget_s=EXPIRED_BUDGET_S)
            done = due + await self.sweeper.walk_stores(max_windows=WALK_WINDOWS_PER_TICK)
            self.work["expired_records"] += done
            if done:
                self._changed()
            return done

    def _changed(self) -> None:
        """Reclaiming may have logged changes (expiry, deletes by prefix): wake the feed's
        waiters of this process (other processes hear of it through the index)."""
        if self._on_change is not None:
            self._on_change(None)

    async def trim_changes(self) -> int:
        """Drop changes older than the feed's retention, in bounded batches. Returns how many."""
        if self._changes_retention_ms is None:
            return 0
        before = self._clock.now_ms() - self._changes_retention_ms
        total = 0
        pacer = Pacer()
        for _ in range(TRIMS_PER_SWEEP):
            trimmed = await self._index.trim_changes(before_ms=before, max_rows=TRIM_BATCH)
            total += trimmed
            if trimmed < TRIM_BATCH:
                break
            await pacer.pause()
        self.work["trimmed_changes"] += total
        return total

    async def collect_orphans(self) -> int:
        """Delete blobs no record points to (left by a crash between blob write and commit)."""
        cutoff = self._clock.now_ms() - ORPHAN_MIN_AGE_MS
        removed = 0
        batch: list[str] = []
        async for blob_id in self._blobs.list_ids(older_than_ms=cutoff):
            batch.append(blob_id)
            if len(batch) >= ORPHAN_BATCH:
                removed += await self._drop_unreferenced(batch)
                batch = []
        if batch:
            removed += await self._drop_unreferenced(batch)
        return removed

    async def _drop_unreferenced(self, batch: list[str]) -> int:
        keep = await self._index.referenced_blob_ids(batch)
        gone = [b for b in batch if b not in keep]
        for blob_id in gone:
            await self._blobs.delete(blob_id)
        self.work["orphaned_blobs"] += len(gone)
        return len(gone)

    async def run(self) -> None:
        """Runs for the life of a server process: flush counters, sweep expired stores,
        reclaim deleted ones. Failures are logged and the next tick tries again."""
        next_sweep = self._clock.now_ms()
        next_orphans = self._clock.now_ms() + ORPHAN_MIN_AGE_MS
        # What a crash left half done: blobs of reclaimed rows, temp files of uploads killed
        # mid-way, blobs no record points to.
        for first_pass in (self.sweeper.drop_freed, self.collect_orphans):
            try:
                await first_pass()
            except Exception as exc:
                self._failing.report(exc)
        while True:
            await asyncio.sleep(self._flush_interval_s)
            try:
                await self._stats.flush()
                if self._sweep_interval_s > 0 and self._clock.now_ms() >= next_sweep:
                    next_sweep = self._clock.now_ms() + int(self._sweep_interval_s * 1000)
                    if await self._sweep(orphans_due=self._clock.now_ms() >= next_orphans):
                        next_orphans = self._clock.now_ms() + ORPHAN_MIN_AGE_MS
                await self._purge()
                if self._sweep_interval_s > 0:
                    await self.sweep_records()
            except Exception as exc:
                self._failing.report(exc)
            else:
                self._failing.recovered()

    async def _sweep(self, *, orphans_due: bool) -> bool:
        """Sweep expired stores if this node holds the sweeper lock; returns whether orphans
        were collected too (also on nodes that never restart)."""
        async with self._index.exclusive(SWEEPER_LOCK) as leader:
            if not leader:
                return False
            pacer = Pacer()
            while (expired := await self._retention.sweep()) > 0:
                self.work["expired_stores"] += expired
                await pacer.pause()
            await self.sweeper.drop_freed()  # left by a node that died mid-way
            await self.trim_changes()
            if orphans_due:
                await self.collect_orphans()
            return orphans_due

    async def _purge(self) -> None:
        pacer = Pacer()
        for _ in range(PURGES_PER_TICK):
            await self.reclaim()
            if not await self._index.purge_pending():
                return
            await pacer.pause()


class _FailureLog:
    """Background failures, each logged once until a tick succeeds again: a full disk or a
    database that is down fails every tick, and one line says so (a traceback only for
    failures that are not the storage's)."""

    def __init__(self) -> None:
        self._last: str | None = None

    def report(self, exc: Exception) -> None:
        what = f"{type(exc).__name__}: {exc}"
        if what == self._last:
            return
        self._last = what
        if isinstance(exc, InsufficientStorageError | StorageUnavailableError):
            log.warning("background housekeeping waits (%s); counters are kept in memory meanwhile", exc)
        else:
            log.error("background housekeeping failed; retrying", exc_info=exc)

    def recovered(self) -> None:
        if self._last is not None:
            log.info("background housekeeping works again")
            self._last = None
