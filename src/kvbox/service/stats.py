"""Read and list counters buffered in memory and flushed in batches.

Writes and deletes are counted inside their own transactions; reads and listings would
otherwise turn every GET into a write, so they are summed here and flushed every second.
"""

from __future__ import annotations

from kvbox.backends.base import MetadataIndex
from kvbox.core.models import StatsDelta


class StatsBuffer:
    def __init__(self, index: MetadataIndex) -> None:
        self._index = index
        self._pending: dict[str, StatsDelta] = {}

    def read(self, store_id: str, now_ms: int) -> None:
        self._delta(store_id, now_ms).reads += 1

    def listed(self, store_id: str, now_ms: int) -> None:
        self._delta(store_id, now_ms).lists += 1

    def touched(self, store_id: str, now_ms: int) -> None:
        self._delta(store_id, now_ms)

    def _delta(self, store_id: str, now_ms: int) -> StatsDelta:
        d = self._pending.get(store_id)
        if d is None:
            d = self._pending[store_id] = StatsDelta()
        d.accessed_at = now_ms
        return d

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await self._index.apply_stats(pending)
        except Exception:
            # Keep the counts for the next flush rather than losing them.
            for store_id, d in pending.items():
                self._pending.setdefault(store_id, StatsDelta()).merge(d)
            raise
