"""Index rows reused across requests until the index reports a change since they were read.

Two instances serve a process: one for users, tokens, stores and grants, keyed to the
index's metadata generation (which record writes leave alone), and one for record rows,
keyed to any commit at all.

A record GET otherwise reads the token, its user, the store and the record: four queries.
Indexes that can say cheaply whether anything changed (SQLite's `data_version`, the memory
backend's counter) let the first three come from here; the check is one cheap call per
lookup, so a revoked token or a changed store is seen at once. An index that cannot tell
(PostgreSQL shared by many nodes) reports a new generation on every call: every lookup
then loads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from kvbox.backends.base import MetadataIndex

T = TypeVar("T")
MAX_ENTRIES = 20_000
MAX_BYTES = 16 * 1024 * 1024  # record bodies kept per process, at most
_MISS = object()


class ReadCache:
    def __init__(self, index: MetadataIndex, *, metadata_only: bool = False) -> None:
        self._generation_of = index.metadata_generation if metadata_only else index.read_generation
        self._generation: int | None = None
        self._rows: dict[Hashable, Any] = {}
        self._bytes = 0
        # Lookups answered from memory and loaded from the index (read by the metrics).
        self.hits = 0
        self.misses = 0

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The row under `key`, loaded when missing or when the index changed since."""
        return await self.get_record(key, load, _weightless)

    async def get_record(self, key: Hashable, load: Callable[[], Awaitable[T]], size: Callable[[T], int]) -> T:
        """Like `get`, for rows that carry a body: `size` weighs it against the byte budget,
        and a row heavier than 1/64 of the budget is not kept."""
        generation = self._generation_of()
        if generation != self._generation:
            self._clear()
            self._generation = generation
        hit = self._rows.get(key, _MISS)
        if hit is not _MISS:
            self.hits += 1
            return hit  # type: ignore[no-any-return]
        self.misses += 1
        value = await load()
        weight = size(value)
        if weight > MAX_BYTES // 64:
            return value
        if len(self._rows) >= MAX_ENTRIES or self._bytes + weight > MAX_BYTES:
            self._clear()
        self._rows[key] = value
        self._bytes += weight
        return value

    def _clear(self) -> None:
        self._rows.clear()
        self._bytes = 0


def _weightless(_: object) -> int:
    return 0
