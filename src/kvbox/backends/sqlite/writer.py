"""One writer thread per process with group commit.

Hot writes (record puts and deletes, counter flushes) are queued here instead of running on
the event loop. The thread takes everything queued, runs it in one `BEGIN IMMEDIATE`
transaction, lets the index fold per-batch bookkeeping in (`before_commit`), commits once,
then settles every caller's future. If any operation fails, the batch is rolled back and
each operation runs again in a transaction of its own, so one failure spoils nothing else.
Waiting for another process's write lock and WAL checkpoints happen on this thread, never
on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from kvbox.core.errors import KvboxError, StorageError

T = TypeVar("T")
Batch = dict[str, Any]
Operation = Callable[[sqlite3.Connection, Batch], Any]
BeforeCommit = Callable[[sqlite3.Connection, Batch], None]
_Pending = tuple[str, Operation, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
MAX_BATCH = 256


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _as_error(action: str, error: BaseException) -> BaseException:
    if isinstance(error, KvboxError):
        return error
    if isinstance(error, sqlite3.Error | ValueError | TypeError):
        failure = StorageError(f"The SQLite index failed to {action}: {error}")
        failure.__cause__ = error
        return failure
    return error


class WriterThread:
    def __init__(
        self, path: Path, *, durable: bool, busy_timeout_s: float, before_commit: BeforeCommit | None = None
    ) -> None:
        self._before_commit = before_commit
        self._path = path
        self._durable = durable
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvbox-sqlite-writer")
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._conn: sqlite3.Connection | None = None

    async def run(self, action: str, operation: Operation) -> Any:
        """Run `operation(conn, batch)` inside the next group transaction and return its result.

        `batch` is a dict shared by the operations of one transaction, read by `before_commit`.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._pending.append((action, operation, future, loop))
            if not self._scheduled:
                self._scheduled = True
                self._executor.submit(self._drain)
        return await future

    def close(self) -> None:
        self._executor.submit(self._close_connection).result()
        self._executor.shutdown(wait=True)

    # below: the writer thread only

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self._durable else 'NORMAL'}")
            self._conn = conn
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                if not batch:
                    self._scheduled = False
                    return
            self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        outcomes: list[tuple[bool, Any]]
        try:
            outcomes = [(True, value) for value in self._transaction(batch)]
        except Exception as error:
            if len(batch) == 1:
                outcomes = [(False, _as_error(batch[0][0], error))]
            else:  # find the failing operation(s): each again on its own
                outcomes = [self._alone(pending) for pending in batch]
        self._settle_all(batch, outcomes)

    def _alone(self, pending: _Pending) -> tuple[bool, Any]:
        try:
            return True, self._transaction([pending])[0]
        except Exception as error:
            return False, _as_error(pending[0], error)

    def _transaction(self, batch: list[_Pending]) -> list[Any]:
        conn = self._connection()
        state: Batch = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [operation(conn, state) for _, operation, _, _ in batch]
            if self._before_commit is not None:
                self._before_commit(conn, state)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _settle_all(self, batch: list[_Pending], outcomes: list[tuple[bool, Any]]) -> None:
        for (_, _, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # that caller's event loop is gone
                loop.call_soon_threadsafe(_settle, future, ok, value)
