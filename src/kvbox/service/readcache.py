"""Index rows reused across requests until the index reports a change since they were read.

Two instances serve a process: one for users, tokens, stores and grants, keyed to the
index's metadata generation (which record writes leave alone), and one for record rows,
keyed to any commit at all.

A record GET otherwise reads the token, its user, the store and the record: four queries.
Indexes that can say cheaply whether anything changed (SQLite's `data_version`, the memory
backend's counter) let them come from here. The generations are read once per request
(`Freshness.begin`, called as a request starts), not once per lookup, so a revoked token
or a changed store is seen by the next request that starts. An index that cannot tell
(PostgreSQL shared by many nodes) reports a new generation on every call: every lookup
then loads, and the scale-out record path confirms what it needs in its own round trip.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar
from typing import Any, TypeVar

from kvbox.backends.base import MetadataIndex

T = TypeVar("T")
MAX_ENTRIES = 20_000
MAX_BYTES = 16 * 1024 * 1024  # record bodies kept per process, by default (KVBOX_RECORD_CACHE_SIZE)
_MISS = object()
# The mark of the request whose start the generations were last read for, in the context
# (asyncio task) of that request. A context that never began a request (background work)
# holds no mark and reads the generations on every lookup.
_BEGUN: ContextVar[object] = ContextVar("kvbox_cache_begun", default=None)


class Freshness:
    """The index's generations as of the start of the current request.

    `begin` reads them (one cheap call; the metadata generation only when anything changed
    at all) and marks the current context; lookups in that context reuse the values until
    another request begins. Lookups elsewhere read them anew every time.
    """

    def __init__(self, index: MetadataIndex) -> None:
        self._index = index
        self._mark: object = object()
        self._read: int | None = None
        self._metadata = 0

    def begin(self) -> None:
        """Read the generations for a request starting now, in its own context."""
        self._check()
        self._mark = mark = object()
        _BEGUN.set(mark)

    def _check(self) -> None:
        read = self._index.read_generation()
        if read != self._read:
            # Any change to users, tokens, stores or grants also moves the read generation.
            self._read = read
            self._metadata = self._index.metadata_generation()

    def read(self) -> int:
        if _BEGUN.get() is not self._mark:
            self._check()
        return self._read  # type: ignore[return-value]

    def metadata(self) -> int:
        if _BEGUN.get() is not self._mark:
            self._check()
        return self._metadata


class ReadCache:
    """With `second_miss`, a row is kept from the second time its key misses on: a row read
    once, like most rows of a big store read at random, costs no more than the read. Kept,
    it would stay alive until the next clear, walked by the garbage collector on its way to
    the oldest generation and then freed with the clear: on random GETs of a store of
    10,000,000 records, keeping every row cost a worker 12% more CPU per request. The keys
    that missed are remembered by hash across clears (a key asked for again after a write is
    kept at once) and forgotten MAX_ENTRIES misses later."""

    def __init__(
        self,
        index: MetadataIndex,
        *,
        metadata_only: bool = False,
        freshness: Freshness | None = None,
        second_miss: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        """`max_bytes` is the budget for record bodies (MAX_BYTES unless given); the rows kept
        are bounded in proportion to it, MAX_ENTRIES for MAX_BYTES. A budget of 0 keeps nothing."""
        freshness = freshness or Freshness(index)
        budget = MAX_BYTES if max_bytes is None else max_bytes
        self._max_bytes = budget
        self._max_entries = max(1, budget * MAX_ENTRIES // MAX_BYTES)
        # Rows heavier than this are not kept: 1/64 of the budget, and none at all without one.
        self._max_weight = budget // 64 if budget > 0 else -1
        self._generation_of = freshness.metadata if metadata_only else freshness.read
        self._generation: int | None = None
        self._rows: dict[Hashable, Any] = {}
        self._bytes = 0
        # Hashes of the keys that missed once (a set of ints: nothing for the collector to walk).
        self._missed: set[int] | None = set() if second_miss and budget > 0 else None
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
        missed = self._missed
        if missed is not None:
            seen = hash(key)
            if seen not in missed:
                if len(missed) >= self._max_entries:
                    missed.clear()
                missed.add(seen)
                return value
        weight = size(value)
        if weight > self._max_weight:
            return value
        if len(self._rows) >= self._max_entries or self._bytes + weight > self._max_bytes:
            self._clear()
        self._rows[key] = value
        self._bytes += weight
        return value

    def _clear(self) -> None:
        self._rows.clear()
        self._bytes = 0


def _weightless(_: object) -> int:
    return 0
