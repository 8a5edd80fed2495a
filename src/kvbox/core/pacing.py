"""Background work in batches (sweeping, purging, trimming) takes turns with requests.

Each batch holds the database's write lock while it runs; with only `asyncio.sleep(0)`
between batches, a writer in another worker process that polls for the lock could find it
taken, time after time, for as long as the work lasts. A `Pacer` pauses after each batch
for at least as long as the batch took, so the lock is free at least half of the time.
"""

from __future__ import annotations

import asyncio
import time

MIN_PAUSE_S = 0.002


class Pacer:
    def __init__(self) -> None:
        self._started = time.monotonic()

    async def pause(self) -> None:
        """Call after each batch: sleep at least as long as it took (since the last pause)."""
        await asyncio.sleep(max(MIN_PAUSE_S, time.monotonic() - self._started))
        self._started = time.monotonic()
