"""The record path's queries, sent in batches over connections in libpq's pipeline mode.

Each query of the record path (read a record as a caller, write one) is a single statement,
so its cost in the node is mostly the round trip: a `send` that wakes the database's
backend, a wait, a `recv`, and psycopg's bookkeeping around each. A `Pipelines` sends all
the queries asked for in one turn of the event loop together, on one of a few connections
it holds for the life of the process, and hands out each query's row as its results come
back, in order. The reads of a batch share one transaction, and so do its writes of one
group (a store's record writes: one commit for all of them); every other write is a
transaction of its own. The reads of one statement that has a `many` run as one execution of
it, over arrays of their parameters, one row each: the database sets up the statement's plan
once for them all instead of once each (for a record read, most of its work). The database
answers each transaction in one packet. Under READ COMMITTED each read still sees every
commit made before it runs. When a query of a shared transaction fails, the others are sent
again, each alone, so an error reaches only the query that caused it and a write is answered
only once it has committed; so are the reads of a failed `many`.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection, abc, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result
from psycopg_pool import AsyncConnectionPool

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
_ExecStatus = pq.ExecStatus
MAX_TRIES = 3  # sends of a query whose transaction failed for another one's error
# Left to choose, PostgreSQL plans a prepared statement again on every run whenever its generic
# plan's estimate is worse than the plans made for the values of its first runs: for a read of
# a few records over arrays that is 300 µs of planning a run instead of 10 µs of executing, and
# it plans a record write's inner statements again and again too (see docs/performance.md).
_PLAN_ONCE = "SET plan_cache_mode = force_generic_plan"


@dataclass(frozen=True, slots=True)
class Statement:
    """A query with psycopg placeholders (`%s`, or `%(name)s` for a mapping), numbered for libpq."""

    sql: bytes
    names: tuple[str, ...] | None  # the mapping's keys in `$n` order; None: positional
    read_only: bool = False  # may share a transaction with the other reads of its batch
    # The same read for several sets of parameters at once: each parameter an array of the sets'
    # values, in the same order; one row for each set, led by the set's number (from 1).
    many: Statement | None = None

    @classmethod
    def of(cls, query: str, *, read_only: bool = False, many: str | None = None) -> Statement:
        """`many`: the query of `many`, with the same placeholders in the same order (reads only)."""
        sql, names, count = _numbered(query)
        several = None
        if many is not None:
            if not read_only:
                raise ValueError("only a read runs for several sets of parameters at once")
            many_sql, many_names, many_count = _numbered(many)
            if (many_names, many_count) != (names, count):
                raise ValueError("a read's `many` takes the same placeholders in the same order")
            several = cls(many_sql, many_names)
        return cls(sql, names, read_only, several)

    def values(self, params: Sequence[Any] | dict[str, Any]) -> Sequence[Any]:
        if self.names is None:
            assert not isinstance(params, dict)
            return params
        assert isinstance(params, dict)
        return [params[n] for n in self.names]


def _numbered(query: str) -> tuple[bytes, tuple[str, ...] | None, int]:
    """A query with its placeholders numbered for libpq, the names in `$n` order (None for
    positional ones) and how many there are."""
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
    return sql.encode(), tuple(names) if names else None, len(names) or positional


@dataclass(slots=True)
class _Query:
    statement: Statement
    params: Sequence[Any] | dict[str, Any]
    done: asyncio.Future[Any]
    group: str | None = None  # writes of one group in a batch share a transaction; None: alone
    errors: list[Exception] = field(default_factory=list)
    row: Any = None
    parsed: tuple[bytes, tuple[int, ...]] | None = None  # the statement was prepared with it
    ends: int = 1  # result groups still to come: one per statement sent (Parse, Execute)
    aborted: bool = False  # skipped for an earlier query's error in its transaction
    tries: int = 0
    alone: bool = False  # sent again in a transaction of its own
    name: bytes = b""  # the prepared statement it runs
    parts: list[_Query] | None = None  # the reads it runs at once (its statement is their `many`)


def _fail(query: _Query, error: Exception) -> None:
    """Fail the callers of a query (of each read a combined one runs) still waiting."""
    for caller in query.parts or (query,):
        if not caller.done.done():
            caller.done.set_exception(error)


def _array(values: Sequence[Any]) -> str | list[Any]:
    """A parameter of a `many`: the text of a PostgreSQL array when it holds only strings and
    NULLs (psycopg's own list dumper runs in Python, and took 4% of a node's GETs), otherwise
    a list, which psycopg dumps."""
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        elif type(value) is str:
            items.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            return list(values)
    return "{" + ",".join(items) + "}"


def _combined(reads: list[_Query], loop: asyncio.AbstractEventLoop) -> list[_Query]:
    """The reads of a batch, those of one statement that has a `many` run together in one query."""
    together: dict[int, list[_Query]] = {}  # by the statement's id: hashing a statement's fields costs more
    out: list[_Query] = []
    for query in reads:
        if query.statement.many is None or query.alone:
            out.append(query)
        else:
            together.setdefault(id(query.statement), []).append(query)
    for parts in together.values():
        statement = parts[0].statement
        many = statement.many
        if len(parts) == 1 or many is None:
            out += parts
            continue
        columns = [_array(column) for column in zip(*(statement.values(q.params) for q in parts), strict=True)]
        params = dict(zip(many.names, columns, strict=True)) if many.names is not None else columns
        out.append(_Query(many, params, loop.create_future(), parts=parts))
    return out


class _Pipeline:
    """One connection in pipeline mode and the queries in flight on it, oldest first."""

    def __init__(self, conn: AsyncConnection, loop: asyncio.AbstractEventLoop, on_idle: Callable[[], None]) -> None:
        self.conn = conn
        self._on_idle = on_idle  # called when it has nothing in flight any more, or broke
        self._pgconn = conn.pgconn
        self._loop = loop
        self._fd = self._pgconn.socket
        self._dump = Transformer(conn)
        self._loaders: dict[bytes, abc.Transformer] = {}  # by prepared statement
        self._prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._names = itertools.count()  # never reused: a statement dropped from `_prepared` may live on
        self.in_flight: deque[_Query] = deque()
        self._ended: list[_Query] = []  # results in, waiting for their transaction's end
        self._writing = False
        self.broken = False
        self._pgconn.enter_pipeline_mode()
        loop.add_reader(self._fd, self._read)

    @property
    def idle(self) -> bool:
        return not (self.broken or self.in_flight or self._ended)

    def send(self, batch: list[_Query]) -> None:
        """Queue the batch as transactions, each closed by a Sync, and push the bytes out: the
        reads together, the writes of each group together, every other write alone."""
        reads: list[_Query] = []
        groups: dict[str, list[_Query]] = {}
        single: list[list[_Query]] = []
        for query in batch:
            if query.alone:
                single.append([query])
            elif query.statement.read_only:
                reads.append(query)
            elif query.group is None:
                single.append([query])
            else:
                groups.setdefault(query.group, []).append(query)
        try:
            for transaction in (_combined(reads, self._loop), *groups.values(), *single):
                if transaction:
                    self._send_transaction(transaction)
        except Exception as e:  # the connection went bad: nothing of the batch will be answered on it
            self.fail(e)
            for query in batch:
                if not query.done.done():
                    query.done.set_exception(e)
            return
        self._flush()

    def _send_transaction(self, queries: list[_Query]) -> None:
        pgconn = self._pgconn
        formats: list[PyFormat] = []
        sent = False
        todo = deque(queries)
        while todo:
            query = todo.popleft()
            values = query.statement.values(query.params)
            if len(formats) != len(values):
                formats = [PyFormat.AUTO] * len(values)
            try:
                dumped = self._dump.dump_sequence(values, formats)
            except psycopg.Error as e:  # a value psycopg cannot adapt: this query alone fails
                if query.parts:  # values that do not go in one array: each read on its own
                    todo.extendleft(reversed(query.parts))
                else:
                    query.done.set_exception(e)
                continue
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
            query.name = name
            self.in_flight.append(query)
            sent = True
        if sent:
            pgconn.pipeline_sync()

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
                    self._settle(ended)
                    continue
                query = self.in_flight[0]
                if status == _ExecStatus.TUPLES_OK:
                    try:
                        query.row = self._row(query, result)
                    except Exception as e:  # a value that does not load: this query's failure
                        query.errors.append(e)
                elif status == _ExecStatus.PIPELINE_ABORTED:
                    query.aborted = True
                elif status == _ExecStatus.FATAL_ERROR:
                    query.errors.append(error_from_result(result, encoding=self.conn.info.encoding))
        except Exception as e:  # the connection broke (or worse): fail what it carries, never hang
            self.fail(e)
            return
        if self.idle:
            self._on_idle()

    def _row(self, query: _Query, result: pq.abc.PGresult) -> Any:
        """The first row of a result, loaded by the loaders its statement's first result chose
        (a prepared statement's columns keep their types)."""
        loader = self._loaders.get(query.name)
        if loader is None:
            loader = self._loaders[query.name] = Transformer(self.conn)
            loader.set_pgresult(result)
        else:
            loader.set_pgresult(result, set_loaders=False)
        if query.parts is not None:  # each read's row, by its number
            return {row[0]: row[1:] for row in loader.load_rows(0, result.ntuples, tuple)}
        return loader.load_row(0, tuple) if result.ntuples else None

    def _settle(self, transaction: list[_Query]) -> None:
        """Answer the queries of a transaction that ended. When one of several failed, the
        transaction was rolled back: its reads that got their rows keep them, everything else
        is sent again in a transaction of its own (an error then is the query's own)."""
        failed = len(transaction) > 1 and any(q.errors for q in transaction)
        again: list[_Query] = []
        for query in transaction:
            if (query.errors or query.aborted) and query.parsed is not None:  # prepare again next time
                self._prepared.pop(query.parsed, None)
                query.parsed = None
            if query.parts is not None:
                again += self._settle_parts(query)
                continue
            if query.done.done():  # its request went away meanwhile
                continue
            if query.aborted or (failed and not (query.statement.read_only and not query.errors)):
                if query.tries < MAX_TRIES:
                    query.alone = True
                    again.append(query)
                else:
                    query.done.set_exception(
                        query.errors[0] if query.errors else psycopg.OperationalError("the query kept being skipped")
                    )
            elif query.errors:
                query.done.set_exception(query.errors[0])
            else:
                query.done.set_result(query.row)
        if again:
            self.send(again)

    @staticmethod
    def _settle_parts(query: _Query) -> list[_Query]:
        """Answer the reads a combined query ran; if it failed, those to send again, each alone."""
        parts = [part for part in query.parts or () if not part.done.done()]
        if query.errors or query.aborted:
            for part in parts:
                part.alone = True
            return parts
        rows = query.row or {}
        for number, part in enumerate(query.parts or (), 1):
            if not part.done.done():
                part.done.set_result(rows.get(number))
        return []

    def fail(self, error: Exception, *, closing: bool = False) -> None:
        """The connection is unusable: fail everything it carries and stop watching it (and,
        unless `closing`, let the queries waiting for a connection go to another)."""
        if self.broken:
            return
        self.broken = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
            if self._writing:
                self._loop.remove_writer(self._fd)
        for query in (*self._ended, *self.in_flight):
            _fail(query, error)
        self._ended, self.in_flight = [], deque()
        if not closing:
            self._on_idle()

    def close(self) -> None:
        self.fail(psycopg.OperationalError("the connection was closed"), closing=True)


class Pipelines:
    """Up to `size` pipelined connections taken from a pool and held for the life of the process.

    A connection carries one batch at a time. A batch goes to a connection with nothing in
    flight; when every one is busy and fewer than `size` are open, a new one is opened for
    it; otherwise its queries wait, with those of the turns that follow, for the first
    connection to be free, and go out together. So batches grow with the load, and a busy
    database gets fewer, larger transactions to run. Two connections suit a worker: each
    backend runs its queries one after another.
    """

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._pipes: list[_Pipeline] = []
        self._batch: list[_Query] = []  # asked for in this turn of the loop
        self._waiting: list[_Query] = []  # asked for earlier, waiting for a free connection
        self._opening = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: AsyncConnectionPool | None = None

    async def fetchone(
        self, pool: AsyncConnectionPool, statement: Statement, params: Any, *, group: str | None = None
    ) -> Any:
        """The first row of `statement` (None if it has none), sent with this loop turn's batch.

        Writes of one `group` in a batch run in one transaction, committed once. Give a group
        only to writes that lock one and the same row first (a store's, for record writes): the
        transactions of two groups then never wait for each other's locks in a cycle."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop: connections watched by the old one are dropped
            for pipe in self._pipes:
                pipe.close()
            self._loop, self._waiting, self._opening = loop, [], 0
        done: asyncio.Future[Any] = loop.create_future()
        if not self._batch:
            self._pool = pool
            loop.call_soon(self._send_batch)
        self._batch.append(_Query(statement, params, done, group))
        return await done

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        self._waiting.extend(batch)
        self._dispatch()

    def _dispatch(self, opened: _Pipeline | None = None) -> None:
        """Send the waiting queries over a free connection (`opened`, the one just opened for
        them, if given), or open one for them if allowed; else they wait for a connection to be
        free (its `on_idle`)."""
        pool = self._pool
        if pool is None:
            return
        for broken in [p for p in self._pipes if p.broken]:
            self._pipes.remove(broken)
            _background(_discard(pool, broken.conn))
        batch, self._waiting = [q for q in self._waiting if not q.done.done()], []
        if not batch:
            return
        pipe = opened if opened is not None and opened.idle else next((p for p in self._pipes if p.idle), None)
        if pipe is not None:
            pipe.send(batch)
        elif len(self._pipes) + self._opening < self._size:
            self._opening += 1
            _background(self._open_then_send(pool, batch))
        else:  # every connection is busy or being opened: the first one free takes them
            self._waiting = batch

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
        try:
            await conn.execute(_PLAN_ONCE)
            pipe = _Pipeline(conn, asyncio.get_running_loop(), self._dispatch)
        except Exception as e:  # the connection is no good: the pool replaces it
            for query in batch:
                if not query.done.done():
                    query.done.set_exception(e)
            await _discard(pool, conn)
            return
        self._pipes.append(pipe)
        self._waiting = batch + self._waiting
        self._dispatch(pipe)

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
