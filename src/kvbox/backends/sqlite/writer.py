"""Group commit for hot writes (record puts and deletes, counter flushes).

Writes queued during one event-loop iteration share one `BEGIN IMMEDIATE` transaction; the
index folds per-batch bookkeeping in (`before_commit`, one store-counter update per store),
commits once, then settles every caller's future. If an operation fails, the batch rolls back
and each operation runs again alone, so one failure spoils nothing else. An operation that
refuses before writing anything (a write whose condition does not hold) returns `Refused`
instead of raising: the batch commits the others and only its caller gets the error. The write lock is
taken without waiting: when another process holds it the batch is retried shortly after, so
the event loop never sleeps inside SQLite and requests keep flowing meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kvbox.backends.failures import storage_failure
from kvbox.core.errors import KvboxError

T = TypeVar("T")
Batch = dict[str, Any]
Operation = Callable[[sqlite3.Connection, Batch], Any]
BeforeCommit = Callable[[sqlite3.Connection, Batch], None]
_Pending = tuple[str, Operation, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
MAX_BATCH = 256


def tune(conn: sqlite3.Connection, *, durable: bool) -> None:
    """The settings every long-lived connection of the index runs with."""
    # NORMAL in WAL loses nothing on a process crash; FULL also survives power loss.
    conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # never on the loop: checkpoint.py's thread does it


class Refused:
    """An operation's result meaning "refused, nothing written": its caller gets `error`."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok and value.__class__ is Refused:
        future.set_exception(value.error)
    elif ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _as_error(action: str, error: BaseException) -> BaseException:
    if isinstance(error, KvboxError):
        return error
    if isinstance(error, sqlite3.Error | ValueError | TypeError):
        failure = storage_failure(f"The SQLite index failed to {action}: {error}", error)
        failure.__cause__ = error
        return failure
    return error


_FIRST_BACKOFF_S = 0.00025
_MAX_BACKOFF_S = 0.002


class LoopWriter:
    """Group commit on the event loop: writes queued during one loop iteration share a
    transaction. The lock is taken without ever sleeping on the loop: when another process
    holds it, the batch is retried a little later (`call_later`) while requests go on."""

    def __init__(
        self, path: Path, *, durable: bool, busy_timeout_s: float, before_commit: BeforeCommit | None = None
    ) -> None:
        self._before_commit = before_commit
        self._path = path
        self._durable = durable
        self._give_up_s = busy_timeout_s
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._conn: sqlite3.Connection | None = None
        self._busy_since: float | None = None
        self._backoff = _FIRST_BACKOFF_S
        self._loop: asyncio.AbstractEventLoop | None = None
        # Group commits so far by the number of writes they carried (read by the metrics).
        self.batch_sizes: dict[int, int] = {}

    async def run(self, action: str, operation: Operation) -> Any:
        """Run `operation(conn, batch)` inside the next group transaction and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._scheduled and self._loop is not loop and (self._loop is None or self._loop.is_closed()):
            # The loop that was to flush is gone (one asyncio.run after another): drop its leftovers.
            self._pending = [p for p in self._pending if not p[3].is_closed()]
            self._scheduled = False
        self._pending.append((action, operation, future, loop))
        if not self._scheduled:
            self._scheduled = True
            self._loop = loop
            loop.call_soon(self._flush, loop)
        return await future

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 0")
            tune(conn, durable=self._durable)
            self._conn = conn
        return self._conn

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if not batch:
            self._scheduled = False
            return
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                self._settle_all(batch, [(False, _as_error(a, error)) for a, _, _, _ in batch])
                self._next(loop)
                return
            # Another process holds the write lock: try again soon, never sleeping here.
            now = loop.time()
            self._busy_since = self._busy_since or now
            if now - self._busy_since > self._give_up_s:
                self._busy_since = None
                self._settle_all(batch, [(False, _as_error(a, error)) for a, _, _, _ in batch])
                self._next(loop)
                return
            self._pending[:0] = batch
            loop.call_later(self._backoff, self._flush, loop)
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF_S)
            return
        self._busy_since = None
        self._backoff = _FIRST_BACKOFF_S
        self._settle_all(batch, self._commit_locked(conn, batch))
        self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
        self._next(loop)

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pending:
            loop.call_soon(self._flush, loop)
        else:
            self._scheduled = False

    def _commit_locked(self, conn: sqlite3.Connection, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        state: Batch = {}
        try:
            results = [operation(conn, state) for _, operation, _, _ in batch]
            if self._before_commit is not None:
                self._before_commit(conn, state)
            conn.execute("COMMIT")
            return [(True, r) for r in results]
        except Exception as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(batch) == 1:
                return [(False, _as_error(batch[0][0], error))]
        # Find the failing operation(s): each again on its own (the lock is ours to retake).
        outcomes: list[tuple[bool, Any]] = []
        for pending in batch:
            try:
                conn.execute("BEGIN IMMEDIATE")
                outcomes.extend(self._commit_locked(conn, [pending]))
            except sqlite3.Error as error:
                outcomes.append((False, _as_error(pending[0], error)))
        return outcomes

    @staticmethod
    def _settle_all(batch: list[_Pending], outcomes: list[tuple[bool, Any]]) -> None:
        for (_, _, future, _), (ok, value) in zip(batch, outcomes, strict=True):
            _settle(future, ok, value)
