"""Index rows reused across requests until the index reports a commit since they were read.

A record GET otherwise reads the token, its user, the store and the record: four queries.
Backends that can say cheaply whether anything changed (a `read_generation()` method:
SQLite's `data_version`, the memory backend's counter) let the first three come from here;
the check is one cheap call per lookup, so a revoked token or a changed store is seen at
once. Backends without it (PostgreSQL shared by many nodes) read every time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from kvbox.backends.base import MetadataIndex

T = TypeVar("T")
MAX_ENTRIES = 20_000
_MISS = object()


class ReadCache:
    def __init__(self, index: MetadataIndex) -> None:
        self._generation_of: Callable[[], int] | None = getattr(index, "read_generation", None)
        self._generation: int | None = None
        self._rows: dict[Hashable, Any] = {}

    async def get(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        if self._generation_of is None:
            return await load()
        generation = self._generation_of()
        if generation != self._generation:
            self._rows.clear()
            self._generation = generation
        hit = self._rows.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        value = await load()
        if len(self._rows) >= MAX_ENTRIES:
            self._rows.clear()
        self._rows[key] = value
        return value
