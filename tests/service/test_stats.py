"""Reads and listings are summed per store in memory and reach the index in one flush."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from kvbox.backends.memory import MemoryMetadataIndex
from kvbox.core.errors import StorageError
from kvbox.core.models import StatsDelta, Store
from kvbox.service.stats import StatsBuffer

pytestmark = pytest.mark.anyio

T0 = 1_767_225_600_000


class FailsOnce(MemoryMetadataIndex):
    """An index whose first counter flush fails, as a dropped database connection would."""

    failed = False

    async def apply_stats(self, deltas: Mapping[str, StatsDelta]) -> None:
        if not self.failed:
            self.failed = True
            raise StorageError("connection lost")
        await super().apply_stats(deltas)


async def new_store(index: MemoryMetadataIndex) -> str:
    await index.insert_store(Store("s1", None, "u1", T0, T0, T0, "secret"))
    return "s1"


async def counts(index: MemoryMetadataIndex, store_id: str) -> tuple[int, int, int]:
    store = await index.get_store(store_id)
    assert store is not None
    return store.stats.read_count, store.stats.list_count, store.accessed_at


async def test_counts_are_summed_and_flushed_once() -> None:
    index = MemoryMetadataIndex()
    store_id = await new_store(index)
    stats = StatsBuffer(index)
    stats.read(store_id, T0 + 1)
    stats.read(store_id, T0 + 2)
    stats.listed(store_id, T0 + 3)
    stats.touched(store_id, T0 + 4)
    assert await counts(index, store_id) == (0, 0, T0)
    await stats.flush()
    assert await counts(index, store_id) == (2, 1, T0 + 4)
    await stats.flush()  # nothing new: nothing changes
    assert await counts(index, store_id) == (2, 1, T0 + 4)


async def test_counts_of_a_failed_flush_go_out_with_the_next() -> None:
    index = FailsOnce()
    store_id = await new_store(index)
    stats = StatsBuffer(index)
    stats.read(store_id, T0 + 5)
    stats.listed(store_id, T0 + 5)
    with pytest.raises(StorageError):
        await stats.flush()
    stats.read(store_id, T0 + 6)
    await stats.flush()
    assert await counts(index, store_id) == (2, 1, T0 + 6)
