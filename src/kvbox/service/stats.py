"""Read and list counters buffered in memory and flushed in batches.

Writes and deletes are counted inside their own transactions; reads and listings would
otherwise turn every GET into a write, so they are summed here and flushed every second.
When the index refuses the flush (a full disk, a database that is down) the counts stay
here and go with the next flush that succeeds: a read never fails for want of counting it.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.backends.base import MetadataIndex
from kvbox.core.errors import StorageError
from kvbox.core.models import StatsDelta


@dataclass(slots=True)
class _Counts:
    """One store's pending counts, added to in place on every read (no allocation per GET)."""

    reads: int = 0
    lists: int = 0
    accessed_at: int = 0

    def add(self, delta: StatsDelta) -> None:
        self.reads += delta.reads
        self.lists += delta.lists
        self.accessed_at = max(self.accessed_at, delta.accessed_at)

    def delta(self) -> StatsDelta:
        return StatsDelta(self.reads, self.lists, self.accessed_at)


class StatsBuffer:
    def __init__(self, index: MetadataIndex) -> None:
        self._index = index
        self._pending: dict[str, _Counts] = {}

    def read(self, store_id: str, now_ms: int) -> None:
        self._counts(store_id, now_ms).reads += 1

    def listed(self, store_id: str, now_ms: int) -> None:
        self._counts(store_id, now_ms).lists += 1

    def touched(self, store_id: str, now_ms: int) -> None:
        self._counts(store_id, now_ms)

    def _counts(self, store_id: str, now_ms: int) -> _Counts:
        c = self._pending.get(store_id)
        if c is None:
            c = self._pending[store_id] = _Counts()
        c.accessed_at = now_ms
        return c

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        deltas = {store_id: c.delta() for store_id, c in pending.items()}
        try:
            await self._index.apply_stats(deltas)
        except Exception:
            # Keep the counts for the next flush rather than losing them.
            for store_id, d in deltas.items():
                self._pending.setdefault(store_id, _Counts()).add(d)
            raise

    async def try_flush(self) -> bool:
        """Flush before a read that shows counters; on a storage failure the counts wait for
        the next flush (the background one reports the failure) and the read goes on."""
        try:
            await self.flush()
        except StorageError:
            return False
        return True
