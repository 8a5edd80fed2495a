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
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class TurnReads:
    """Collects the reads of one turn of an event loop and runs them after it."""

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, read: Callable[[], T]) -> T:
        """The result of `read()`, run after the current turn with the turn's other reads."""
        loop = asyncio.get_running_loop()
        if self._pending and self._loop is not loop:
            if self._loop is None or not self._loop.is_closed():
                return read()  # another loop's turn is collecting: no waiting on it
            self._pending = []  # left by a loop that closed before its turn ended
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((read, future))
        if len(self._pending) == 1:
            self._loop = loop
            loop.call_soon(self._run_pending)
        return await future

    def _run_pending(self) -> None:
        pending, self._pending = self._pending, []
        for read, future in pending:
            if future.done():  # its request was cancelled
                continue
            try:
                result = read()
            except Exception as e:  # each caller gets its own read's failure
                future.set_exception(e)
            else:
                future.set_result(result)
