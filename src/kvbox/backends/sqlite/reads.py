"""Point reads of one event loop turn, run together once the turn is over.

A read asked for while a request is being served waits for a callback that the loop runs
after the turn, and that callback runs every read asked for in the turn, one after another.
Served through granian, a SQLite statement on a request's own path costs the worker far more
than the statement itself: `sqlite3` lets go of the interpreter's lock for each step, and
granian's threads take it in between. Measured with one worker, one extra `SELECT 1` per
GET cost a third of the GET rate, and random GETs of a 10,000,000-record store (every one a
miss of the read cache) ran at half the rate of a small store's. The same statements in a
callback after the turn, like the group commit's writes, cost no more than they take.

A read always runs after it was asked for, on the index's own connection, so it sees every
write committed before the request that asked for it. Reads from another event loop than
the one whose turn is collecting them are run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
A = TypeVar("A")
# Reads many at once: results in the order of the arguments.
ReadAll = Callable[[Sequence[Any]], Sequence[Any]]


class TurnReads:
    """Collects the reads of one turn of an event loop and runs them after it."""

    def __init__(self) -> None:
        # (read_all, argument, future): read_all([argument])[0] is the read's result
        self._pending: list[tuple[ReadAll, Any, asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, read: Callable[[], T]) -> T:
        """The result of `read()`, run after the current turn with the turn's other reads."""

        def read_one(_: Sequence[None]) -> list[T]:
            return [read()]

        return await self.run_together(read_one, None)

    async def run_together(self, read_all: Callable[[Sequence[A]], Sequence[T]], argument: A) -> T:
        """`read_all([argument])[0]`, run after the current turn; the arguments of the turn's
        reads given the same `read_all` go to one call of it, in the order they came."""
        loop = asyncio.get_running_loop()
        if self._pending and self._loop is not loop:
            if self._loop is None or not self._loop.is_closed():
                return read_all([argument])[0]  # another loop's turn is collecting: no waiting on it
            self._pending = []  # left by a loop that closed before its turn ended
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((read_all, argument, future))
        if len(self._pending) == 1:
            self._loop = loop
            loop.call_soon(self._run_pending)
        return await future

    def _run_pending(self) -> None:
        pending, self._pending = self._pending, []
        groups: dict[ReadAll, list[tuple[Any, asyncio.Future[Any]]]] = {}
        for read_all, argument, future in pending:
            if not future.done():  # else its request was cancelled
                groups.setdefault(read_all, []).append((argument, future))
        for read_all, reads in groups.items():
            if len(reads) > 1:
                try:
                    results = read_all([argument for argument, _ in reads])
                except Exception:  # read them one by one below: each caller gets its own failure
                    pass
                else:
                    for (_, future), result in zip(reads, results, strict=True):
                        future.set_result(result)
                    continue
            for argument, future in reads:
                try:
                    result = read_all([argument])[0]
                except Exception as e:
                    future.set_exception(e)
                else:
                    future.set_result(result)
