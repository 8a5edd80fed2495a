"""Connections a process keeps for the record path, between requests.

Checking a connection out of psycopg's pool costs more than a point query (a wait with a
timeout, a task, locks). The record path instead takes one of up to `size` connections that
stay checked out for the life of the process: a list pop when one is free, otherwise a wait
in line (first come, first served, bounded by `wait_s`). A connection that fails a query goes
back to the pool, which checks it and replaces a broken one.
"""

from __future__ import annotations

import asyncio
from collections import deque

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout


class HeldConnections:
    def __init__(self, size: int, wait_s: float) -> None:
        self._size = max(1, size)
        self._wait_s = wait_s
        self._free: list[AsyncConnection] = []
        self._taken = 0  # held connections, free or in use (or being opened)
        self._waiters: deque[asyncio.Future[AsyncConnection]] = deque()

    async def take(self, pool: AsyncConnectionPool) -> AsyncConnection:
        """A held connection; raises `PoolTimeout` after waiting `wait_s` for one."""
        if self._free:
            return self._free.pop()
        if self._taken < self._size:
            self._taken += 1  # counted before the wait: concurrent requests never take more
            try:
                return await pool.getconn()
            except BaseException:
                self._taken -= 1
                raise
        waiter: asyncio.Future[AsyncConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        timer = asyncio.get_running_loop().call_later(self._wait_s, _expire, waiter, self._wait_s)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give_back(waiter.result())  # handed over just as the request was cancelled
            raise
        finally:
            timer.cancel()

    def give_back(self, conn: AsyncConnection) -> None:
        """Return a connection after a query that succeeded: to the first one waiting, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._free.append(conn)

    async def drop(self, conn: AsyncConnection, pool: AsyncConnectionPool) -> None:
        """Return a connection whose query failed to the pool (which checks it) and stop holding it."""
        self._taken -= 1
        await pool.putconn(conn)

    async def close(self, pool: AsyncConnectionPool) -> None:
        free, self._free = self._free, []
        self._taken -= len(free)
        for conn in free:
            await pool.putconn(conn)


def _expire(waiter: asyncio.Future[AsyncConnection], wait_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(PoolTimeout(f"couldn't get a connection after {wait_s:.2f} sec"))
