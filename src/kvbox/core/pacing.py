"""Background work in batches (sweeping, purging, trimming) takes turns with requests.

Each batch holds the database's write lock while it runs, and on SQLite it runs on a
worker's event loop: a record write waits for the batch in progress, in its own process or
in another one. So batches are kept short and apart. A `Pacer` sizes batches to take about
`TARGET_BATCH_S` each, and after each one pauses at least as long as it took (and at least
`MIN_PAUSE_S`), so the lock is free at least half of the time and a waiting writer gets it
within a fraction of a millisecond of its turn.
"""

from __future__ import annotations

import asyncio
import time

MIN_PAUSE_S = 0.002
TARGET_BATCH_S = 0.0005


class Pacer:
    def __init__(self, size: int = 100, *, least: int = 10, most: int = 1000) -> None:
        self.size = size
        self._least = least
        self._most = most
        self._started = time.monotonic()

    def start(self) -> None:
        """A new run of batches starts now (the first is not paused for)."""
        self._started = time.monotonic()

    async def pause(self, done: int | None = None) -> None:
        """Call after each batch, with the rows it handled when it was sized by `size`: a full
        batch's time sizes the next one. Sleeps at least as long as the batch took."""
        took = time.monotonic() - self._started
        if done is not None and done >= self.size:
            scale = min(2.0, TARGET_BATCH_S / max(took, 1e-5))
            self.size = max(self._least, min(self._most, round(self.size * scale)))
        await asyncio.sleep(max(MIN_PAUSE_S, took))
        self._started = time.monotonic()
