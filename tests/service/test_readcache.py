"""The read cache keeps rows until the index changes, and keeps record bodies within a byte budget."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from kvbox.backends.memory import MemoryMetadataIndex
from kvbox.core.models import User
from kvbox.service import readcache
from kvbox.service.readcache import Freshness, ReadCache

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


async def test_a_request_reads_the_generations_once_and_the_next_sees_a_change(tmp_path: Path) -> None:
    from kvbox.backends.sqlite.metadata import SqliteMetadataIndex

    index = SqliteMetadataIndex(tmp_path / "kvbox.db")
    other = SqliteMetadataIndex(tmp_path / "kvbox.db")  # another process on the same file
    reads = []
    generation = index.read_generation

    def counted() -> int:
        reads.append(1)
        return generation()

    index.read_generation = counted  # type: ignore[method-assign]
    freshness = Freshness(index)
    cache = ReadCache(index, metadata_only=True, freshness=freshness)
    loads = []

    async def load() -> int:
        loads.append(1)
        return len(loads)

    async def request() -> int:
        freshness.begin()
        first = await cache.get("k", load)
        assert await cache.get("k", load) == first
        return first

    assert await asyncio.create_task(request()) == 1
    assert len(reads) == 1  # once for the request, not once per lookup
    assert await asyncio.create_task(request()) == 1  # nothing changed: reused
    await other.insert_user(User(id="u1", username="ann", created_at=0))
    assert await asyncio.create_task(request()) == 2  # the next request sees the change
    await other.insert_user(User(id="u2", username="bob", created_at=0))
    assert await cache.get("k", load) == 3  # outside a request: checked on every lookup
    await index.close()
    await other.close()


async def test_with_second_miss_a_row_is_kept_once_its_key_missed_before() -> None:
    index = MemoryMetadataIndex()
    cache = ReadCache(index, second_miss=True)
    loads: list[str] = []

    def loader(key: str) -> Callable[[], Awaitable[bytes]]:
        async def load() -> bytes:
            loads.append(key)
            return key.encode()

        return load

    for _ in range(3):
        assert await cache.get_record("a", loader("a"), len) == b"a"
    assert loads == ["a", "a"]  # read once, read again and kept, then reused
    assert (cache.hits, cache.misses) == (1, 2)
    await index.insert_user(User(id="u1", username="ann", created_at=0))  # the index changed
    for _ in range(2):
        await cache.get_record("a", loader("a"), len)
    assert loads == ["a", "a", "a"]  # missed before the change: kept on its first miss after it
    await cache.get_record("b", loader("b"), len)
    assert "b" not in cache._rows


async def test_the_keys_that_missed_once_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readcache, "MAX_ENTRIES", 10)
    cache = ReadCache(MemoryMetadataIndex(), second_miss=True)

    async def load() -> bytes:
        return b"v"

    for i in range(25):
        await cache.get_record(f"k{i}", load, len)
    assert cache._missed is not None and len(cache._missed) == 5  # forgotten at 10, 10 more, then 5
    assert cache._rows == {}  # each key missed only once: nothing kept
    cache_all = ReadCache(MemoryMetadataIndex())  # without it, every miss is kept
    await cache_all.get_record("k", load, len)
    assert list(cache_all._rows) == ["k"]


async def test_the_byte_budget_bounds_the_rows_kept_in_proportion() -> None:
    cache = ReadCache(MemoryMetadataIndex(), max_bytes=readcache.MAX_BYTES // 4)
    rows = readcache.MAX_ENTRIES // 4

    async def load() -> bytes:
        return b"v"

    for i in range(rows):
        await cache.get_record(f"k{i}", load, len)
    assert len(cache._rows) == rows
    await cache.get_record("one-more", load, len)  # over the bound: the cache empties itself first
    assert list(cache._rows) == ["one-more"]

    async def heavy() -> bytes:
        return b"x" * (readcache.MAX_BYTES // 4 // 64 + 1)

    await cache.get_record("heavy", heavy, len)  # over 1/64 of this budget: not kept
    assert "heavy" not in cache._rows


async def test_a_budget_of_zero_keeps_nothing() -> None:
    cache = ReadCache(MemoryMetadataIndex(), second_miss=True, max_bytes=0)
    loads: list[int] = []

    async def load() -> bytes:
        loads.append(1)
        return b""

    for _ in range(3):
        assert await cache.get_record("k", load, len) == b""
        assert await cache.get("row", load) == b""  # weightless rows neither
    assert (len(loads), cache.hits, cache.misses) == (6, 0, 6)
    assert cache._rows == {} and cache._missed is None
