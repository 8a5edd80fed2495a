"""The record path's queries, sent in batches over connections in libpq's pipeline mode.

Each query of the record path (read a record as a caller, write one) is a single statement,
so its cost in the node is mostly the round trip: a `send` that wakes the database's
backend, a wait, a `recv`, and psycopg's bookkeeping around each. A `Pipelines` sends all
the queries asked for in one turn of the event loop together, on one of a few connections
it holds for the life of the process, and hands out each query's row as its results come
back, in order. Every write is its own transaction (a Sync before and after it), so a write
that fails fails alone. Reads next to each other in a batch share one transaction: the
database then answers them all in one packet. Under READ COMMITTED each still sees every
commit made before it runs; a read skipped because another read of its transaction failed
is sent again.

Statements are prepared on a connection the first time it runs them (the Parse travels in
the same batch); their parameters are dumped and their rows loaded by psycopg's own
adapters. A connection that breaks fails the queries it carries, goes back to the pool
(which replaces it) and the next batch takes another.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result
from psycopg_pool import AsyncConnectionPool

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
_ExecStatus = pq.ExecStatus
MAX_TRIES = 3  # sends of a read skipped because another read of its transaction failed


@dataclass(frozen=True, slots=True)
class Statement:
    """A query with psycopg placeholders (`%s`, or `%(name)s` for a mapping), numbered for libpq."""

    sql: bytes
    names: tuple[str, ...] | None  # the mapping's keys in `$n` order; None: positional
    read_only: bool = False  # may share a transaction with the other reads of its batch

    @classmethod
    def of(cls, query: str, *, read_only: bool = False) -> Statement:
        names: list[str] = []
        positional = 0

        def number(m: re.Match[str]) -> str:
            nonlocal positional
            if m.group(0) == "%%":
                return "%"
            if m.group(1) is None:
                positional += 1
                return f"${positional}"
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        sql = _PLACEHOLDER.sub(number, query)
        if names and positional:
            raise ValueError("a statement takes either %s or %(name)s placeholders, not both")
        return cls(sql.encode(), tuple(names) if names else None, read_only)

    def values(self, params: Sequence[Any] | dict[str, Any]) -> Sequence[Any]:
        if self.names is None:
            assert not isinstance(params, dict)
            return params
        assert isinstance(params, dict)
        return [params[n] for n in self.names]


@dataclass(slots=True)
class _Query:
    statement: Statement
    params: Sequence[Any] | dict[str, Any]
    done: asyncio.Future[Any]
    errors: list[psycopg.Error] = field(default_factory=list)
    row: Any = None
    parsed: tuple[bytes, tuple[int, ...]] | None = None  # the statement was prepared with it
    ends: int = 1  # result groups still to come: one per statement sent (Parse, Execute)
    aborted: bool = False  # skipped for an earlier read's error in its transaction
    tries: int = 0


class _Pipeline:
    """One connection in pipeline mode and the queries in flight on it, oldest first."""

    def __init__(self, conn: AsyncConnection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self._pgconn = conn.pgconn
        self._loop = loop
        self._fd = self._pgconn.socket
        self._dump = Transformer(conn)
        self._load = Transformer(conn)
        self._prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._names = itertools.count()  # never reused: a statement dropped from `_prepared` may live on
        self.in_flight: deque[_Query] = deque()
        self._ended: list[_Query] = []  # results in, waiting for their transaction's end
        self._writing = False
        self.broken = False
        self._pgconn.enter_pipeline_mode()
        loop.add_reader(self._fd, self._read)

    def send(self, batch: list[_Query]) -> None:
        """Queue the queries, each write alone between two Syncs (its own transaction) and
        reads next to each other together, then push the bytes out."""
        pgconn = self._pgconn
        formats: list[PyFormat] = []
        reads_open = False
        for query in batch:
            values = query.statement.values(query.params)
            if len(formats) != len(values):
                formats = [PyFormat.AUTO] * len(values)
            try:
                dumped = self._dump.dump_sequence(values, formats)
            except psycopg.Error as e:  # a value psycopg cannot adapt: this query alone fails
                query.done.set_exception(e)
                continue
            read_only = query.statement.read_only
            if reads_open and not read_only:
                pgconn.pipeline_sync()
                reads_open = False
            types = tuple(self._dump.types or ())
            key = (query.statement.sql, types)
            name = self._prepared.get(key)
            query.tries += 1
            query.ends, query.aborted, query.errors, query.row = 1, False, [], None
            if name is None:
                name = self._prepared[key] = f"kvbox_{next(self._names)}".encode()
                pgconn.send_prepare(name, query.statement.sql, param_types=types)
                query.parsed, query.ends = key, 2
            pgconn.send_query_prepared(name, dumped, param_formats=self._dump.formats, result_format=pq.Format.BINARY)
            if read_only:
                reads_open = True
            else:
                pgconn.pipeline_sync()
            self.in_flight.append(query)
        if reads_open:
            pgconn.pipeline_sync()
        self._flush()

    def _flush(self) -> None:
        try:
            pending = self._pgconn.flush()
        except psycopg.Error as e:
            self.fail(e)
            return
        if pending and not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._flush)
        elif not pending and self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _read(self) -> None:
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
            while (self.in_flight or self._ended) and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:  # the end of one statement's results
                    if not self.in_flight:
                        break
                    self.in_flight[0].ends -= 1
                    if not self.in_flight[0].ends:
                        self._ended.append(self.in_flight.popleft())
                    continue
                status = result.status
                if status == _ExecStatus.PIPELINE_SYNC:  # its transaction is over
                    ended, self._ended = self._ended, []
                    for query in ended:
                        self._answer(query)
                    continue
                query = self.in_flight[0]
                if status == _ExecStatus.TUPLES_OK:
                    self._load.set_pgresult(result)
                    query.row = self._load.load_row(0, tuple) if result.ntuples else None
                elif status == _ExecStatus.PIPELINE_ABORTED:
                    query.aborted = True
                elif status == _ExecStatus.FATAL_ERROR:
                    query.errors.append(error_from_result(result, encoding=self.conn.info.encoding))
        except psycopg.Error as e:
            self.fail(e)

    def _answer(self, query: _Query) -> None:
        if (query.errors or query.aborted) and query.parsed is not None:  # prepare again next time
            self._prepared.pop(query.parsed, None)
            query.parsed = None
        if query.done.done():  # its request went away meanwhile
            return
        if query.errors:
            query.done.set_exception(query.errors[0])
        elif query.aborted:  # a read next to one that failed: on its own, it may well succeed
            if query.tries < MAX_TRIES:
                self.send([query])
            else:
                query.done.set_exception(psycopg.OperationalError("the query was skipped after another one failed"))
        else:
            query.done.set_result(query.row)

    def fail(self, error: Exception) -> None:
        """The connection is unusable: fail everything it carries and stop watching it."""
        if self.broken:
            return
        self.broken = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
        for query in (*self._ended, *self.in_flight):
            if not query.done.done():
                query.done.set_exception(error)
        self._ended, self.in_flight = [], deque()

    def close(self) -> None:
        self.fail(psycopg.OperationalError("the connection was closed"))


class Pipelines:
    """Up to `size` pipelined connections taken from a pool and held for the life of the process.

    A batch goes to the connection with the fewest queries in flight; when every one is busy
    and fewer than `size` are open, a new one is opened for it. Few connections make big
    batches: two suit a worker, since each backend runs its queries one after another.
    """

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._pipes: list[_Pipeline] = []
        self._batch: list[_Query] = []
        self._waiting: list[_Query] = []  # batches for connections still being opened
        self._opening = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def fetchone(self, pool: AsyncConnectionPool, statement: Statement, params: Any) -> Any:
        """The first row of `statement` (None if it has none), sent with this loop turn's batch."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: connections watched by the old one are dropped
            for pipe in self._pipes:
                pipe.close()
            self._loop = loop
        done: asyncio.Future[Any] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._send_batch, pool)
        self._batch.append(_Query(statement, params, done))
        return await done

    def _send_batch(self, pool: AsyncConnectionPool) -> None:
        batch, self._batch = self._batch, []
        for broken in [p for p in self._pipes if p.broken]:
            self._pipes.remove(broken)
            _background(_discard(pool, broken.conn))
        batch = [q for q in batch if not q.done.done()]
        if not batch:
            return
        pipe = min(self._pipes, key=lambda p: len(p.in_flight), default=None)
        if (pipe is None or pipe.in_flight) and len(self._pipes) + self._opening < self._size:
            self._opening += 1
            _background(self._open_then_send(pool, batch))
        elif pipe is None:  # every connection allowed is being opened: the first one up takes it
            self._waiting.extend(batch)
        else:
            pipe.send(batch)

    async def _open_then_send(self, pool: AsyncConnectionPool, batch: list[_Query]) -> None:
        try:
            conn = await pool.getconn()
        except Exception as e:  # no connection within the pool's timeout
            self._opening -= 1
            if not self._opening and not self._pipes:  # nothing else will come to take them
                batch, self._waiting = batch + self._waiting, []
            for query in batch:
                if not query.done.done():
                    query.done.set_exception(e)
            return
        self._opening -= 1
        pipe = _Pipeline(conn, asyncio.get_running_loop())
        self._pipes.append(pipe)
        batch, self._waiting = batch + self._waiting, []
        pipe.send([q for q in batch if not q.done.done()])

    async def close(self, pool: AsyncConnectionPool) -> None:
        pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            pipe.close()
            await _discard(pool, pipe.conn)


_tasks: set[asyncio.Task[None]] = set()


def _background(work: Any) -> None:
    """Run `work` as a task kept referenced until it ends."""
    task = asyncio.ensure_future(work)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _discard(pool: AsyncConnectionPool, conn: AsyncConnection) -> None:
    """Close a connection (its session is in pipeline mode, of no use to others) and give it back:
    the pool drops a closed connection and opens another when one is needed."""
    await conn.close()
    await pool.putconn(conn)
