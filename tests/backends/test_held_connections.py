"""The record path's held connections (backends/postgres/connections.py): at most `size` taken
from the pool, the rest of the callers wait in line and get one as it is given back."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from kvbox.backends.postgres.connections import HeldConnections

pytestmark = pytest.mark.anyio


class FakePool:
    def __init__(self) -> None:
        self.out = 0
        self.returned: list[object] = []

    async def getconn(self) -> object:
        self.out += 1
        return object()

    async def putconn(self, conn: object) -> None:
        self.returned.append(conn)


async def test_callers_beyond_the_size_wait_for_a_connection_given_back() -> None:
    fake = FakePool()
    pool = cast(AsyncConnectionPool, fake)
    held = HeldConnections(2, wait_s=5)
    first, second = await held.take(pool), await held.take(pool)
    third = asyncio.ensure_future(held.take(pool))
    await asyncio.sleep(0)
    assert not third.done() and fake.out == 2
    held.give_back(first)
    assert await third is first
    await held.drop(second, pool)  # a failed query: back to the pool, and a new one may be taken
    assert fake.returned == [second]
    assert await held.take(pool) not in (first, second) and fake.out == 3


async def test_a_wait_is_bounded_and_a_cancelled_waiter_loses_no_connection() -> None:
    pool = cast(AsyncConnectionPool, FakePool())
    held = HeldConnections(1, wait_s=0.01)
    only = await held.take(pool)
    with pytest.raises(PoolTimeout):
        await held.take(pool)
    waiting: Any = asyncio.ensure_future(held.take(pool))
    await asyncio.sleep(0)
    held.give_back(only)  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs: the connection is kept for the next one
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await held.take(pool) is only
