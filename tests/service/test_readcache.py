"""The read cache keeps rows until the index changes, and keeps record bodies within a byte budget."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from kvbox.backends.memory import MemoryMetadataIndex
from kvbox.core.models import User
from kvbox.service import readcache
from kvbox.service.readcache import ReadCache

pytestmark = pytest.mark.anyio


async def test_rows_are_reused_until_the_index_changes() -> None:
    index = MemoryMetadataIndex()
    cache = ReadCache(index)
    loads = []

    async def load() -> str:
        loads.append(1)
        return "row"

    assert await cache.get("k", load) == "row"
    assert await cache.get("k", load) == "row"
    assert len(loads) == 1
    await index.insert_user(User(id="u1", username="ann", created_at=0))
    await cache.get("k", load)
    assert len(loads) == 2


async def test_record_bodies_stay_within_the_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readcache, "MAX_BYTES", 6400)
    cache = ReadCache(MemoryMetadataIndex())
    loads: list[str] = []

    def loader(key: str, size: int) -> Callable[[], Awaitable[bytes]]:
        async def load() -> bytes:
            loads.append(key)
            return b"x" * size

        return load

    for key in ("a", "b", "c"):
        await cache.get_record(key, loader(key, 60), len)
    assert cache._bytes == 180
    await cache.get_record("big", loader("big", 101), len)  # over 1/64 of the budget: not kept
    await cache.get_record("big", loader("big", 101), len)
    assert loads.count("big") == 2 and cache._bytes == 180
    for i in range(200):  # 200 x 60 bytes cannot all fit: the cache empties itself instead
        await cache.get_record(f"k{i}", loader(f"k{i}", 60), len)
        assert cache._bytes <= 6400
