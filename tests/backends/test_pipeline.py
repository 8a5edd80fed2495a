"""The record path's pipelined connections (backends/postgres/pipeline.py), on a real PostgreSQL:
the queries of one loop turn go out together, each is its own transaction and fails alone,
and a broken connection is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from tests.backing_services import ScaleOut

from kvbox.backends.postgres.pipeline import Pipelines, Statement
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio

DOUBLE = Statement.of("SELECT %s::int * 2, pg_backend_pid()")
DOUBLE_READ = Statement.of("SELECT %s::int * 2", read_only=True)


@pytest.fixture
async def pool(scale_out: ScaleOut) -> AsyncIterator[AsyncConnectionPool]:
    url = scale_out.settings()["metadata_url"]
    async with AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False) as p:
        async with p.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS pipeline_rows (n int NOT NULL)")
            await conn.execute("TRUNCATE pipeline_rows")
        yield p


@pytest.fixture
async def pipelines(pool: AsyncConnectionPool) -> AsyncIterator[Callable[[int], Pipelines]]:
    """Pipelines of `size` connections on the pool, closed after the test."""
    made: list[Pipelines] = []

    def make(size: int) -> Pipelines:
        made.append(Pipelines(size))
        return made[-1]

    yield make
    for pipes in made:
        await pipes.close(pool)


async def stored(pool: AsyncConnectionPool) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT n FROM pipeline_rows ORDER BY n")
        return [r[0] for r in await cur.fetchall()]


def test_placeholders_are_numbered_for_libpq() -> None:
    named = Statement.of("SELECT %(a)s, %(b)s, %(a)s, '100%%'")
    assert named.sql == b"SELECT $1, $2, $1, '100%'"
    assert named.values({"b": 2, "a": 1, "unused": 3}) == [1, 2]
    positional = Statement.of("SELECT %s, %s::text[]")
    assert positional.sql == b"SELECT $1, $2::text[]" and positional.values((1, ["x"])) == (1, ["x"])
    with pytest.raises(ValueError):
        Statement.of("SELECT %s, %(a)s")


async def test_the_queries_of_one_turn_share_a_few_connections_and_each_gets_its_own_row(
    pool: AsyncConnectionPool,
    pipelines: Callable[[int], Pipelines],
) -> None:
    pipes = pipelines(2)
    rows = await asyncio.gather(*(pipes.fetchone(pool, DOUBLE, (n,)) for n in range(200)))
    assert [r[0] for r in rows] == [2 * n for n in range(200)]
    assert len({r[1] for r in rows}) <= 2  # backend pids: two connections at most
    more = await asyncio.gather(*(pipes.fetchone(pool, DOUBLE, (n,)) for n in range(50)))
    assert {r[1] for r in more} <= {r[1] for r in rows}  # the same connections, kept


class SlowPool:
    """The pool, taking 50 ms to hand out each connection and counting the calls."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.taken = 0

    async def getconn(self) -> Any:
        self.taken += 1
        await asyncio.sleep(0.05)
        return await self.pool.getconn()

    async def putconn(self, conn: Any) -> None:
        await self.pool.putconn(conn)


async def test_batches_of_later_turns_wait_for_the_connections_being_opened(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    pipes = pipelines(2)
    slow = SlowPool(pool)

    async def after(delay: float, n: int) -> Any:
        await asyncio.sleep(delay)
        return await pipes.fetchone(cast(AsyncConnectionPool, slow), DOUBLE, (n,))

    # 30 batches over 30 ms, all asked for before a first connection is open
    rows = await asyncio.gather(*(after(n / 1000, n) for n in range(30)))
    assert [r[0] for r in rows] == [2 * n for n in range(30)]
    assert slow.taken == 2 and len({r[1] for r in rows}) == 2


async def test_queries_asked_for_while_every_connection_is_busy_go_out_together_when_one_is_free(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    pipes = pipelines(1)
    sleep = Statement.of("SELECT pg_sleep(%s), pg_backend_pid()", read_only=True)
    # now(): the start of the query's transaction, shared by the reads of one batch
    timed = Statement.of("SELECT %s::int * 2, now()", read_only=True)
    busy = asyncio.ensure_future(pipes.fetchone(pool, sleep, (0.3,)))
    await asyncio.sleep(0.1)  # the one connection is open and busy

    async def later(n: int) -> Any:
        await asyncio.sleep(n / 500)  # one query per turn over 40 ms
        return await pipes.fetchone(pool, timed, (n,))

    rows = await asyncio.gather(*(later(n) for n in range(20)))
    await busy
    assert [r[0] for r in rows] == [2 * n for n in range(20)]
    assert len({r[1] for r in rows}) == 1  # one batch, one transaction
    alone = await pipes.fetchone(pool, timed, (1,))
    assert alone[1] > rows[0][1]  # an idle connection takes a batch at once, in a new transaction


async def test_a_failing_query_fails_alone_and_the_others_commit(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    insert = Statement.of("INSERT INTO pipeline_rows VALUES (10 / %s) RETURNING n")
    pipes = pipelines(1)
    results = await asyncio.gather(
        *(pipes.fetchone(pool, insert, (d,)) for d in (1, 2, 0, 5, 10)), return_exceptions=True
    )
    assert isinstance(results[2], psycopg.errors.DivisionByZero)
    assert [r[0] for r in results if isinstance(r, tuple)] == [10, 5, 2, 1]
    assert await stored(pool) == [1, 2, 5, 10]
    # A value psycopg cannot adapt fails before it is sent; the statement still works after.
    odd: Any = object()
    bad: Any
    good: Any
    bad, good = await asyncio.gather(
        pipes.fetchone(pool, DOUBLE, (odd,)), pipes.fetchone(pool, DOUBLE, (4,)), return_exceptions=True
    )
    assert isinstance(bad, psycopg.ProgrammingError) and isinstance(good, tuple) and good[0] == 8


async def test_reads_of_a_batch_share_a_transaction_and_survive_a_failing_one(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    read = Statement.of("SELECT 10 / %s, transaction_timestamp()", read_only=True)
    write = Statement.of("INSERT INTO pipeline_rows VALUES (%s) RETURNING n, transaction_timestamp()")
    pipes = pipelines(1)
    await pipes.fetchone(pool, read, (1,))  # prepared, so the batch below is all reads
    results = await asyncio.gather(
        *(pipes.fetchone(pool, read, (d,)) for d in (1, 2, 0, 5, 10)), return_exceptions=True
    )
    assert isinstance(results[2], psycopg.errors.DivisionByZero)
    assert [r[0] for r in results if isinstance(r, tuple)] == [10, 5, 2, 1]  # 5 and 10 sent again
    reads: Any = await asyncio.gather(*(pipes.fetchone(pool, read, (d,)) for d in (1, 2, 5)))
    assert len({r[1] for r in reads}) == 1  # one transaction
    mixed: Any = await asyncio.gather(
        pipes.fetchone(pool, read, (1,)), pipes.fetchone(pool, write, (7,)), pipes.fetchone(pool, write, (8,))
    )
    assert len({r[1] for r in mixed}) == 3  # each write in a transaction of its own


# A read with a `many`: "one" when it ran alone, "many" when its batch ran it with others.
TENTHS = Statement.of(
    "SELECT 10 / %(d)s, %(tag)s::text, 'one'",
    read_only=True,
    many="SELECT q.n, 10 / q.d, q.tag, 'many' "
    "FROM unnest(%(d)s::int[], %(tag)s::text[]) WITH ORDINALITY AS q(d, tag, n)",
)


async def test_reads_of_one_statement_in_a_batch_run_as_one_query_over_arrays(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    pipes = pipelines(1)
    assert await pipes.fetchone(pool, TENTHS, {"d": 5, "tag": "x"}) == (2, "x", "one")
    tags = ["a", None, "NULL", "", " spaced, out ", 'q"uote', "{a,b}", "back\\slash", '\\"', "ключ"]
    asks = [{"d": n + 1, "tag": t} for n, t in enumerate(tags)]
    rows: Any = await asyncio.gather(*(pipes.fetchone(pool, TENTHS, ask) for ask in asks))
    assert list(rows) == [(10 // (n + 1), t, "many") for n, t in enumerate(tags)]
    # Beside other reads, in one transaction with them.
    mixed: Any = await asyncio.gather(
        pipes.fetchone(pool, TENTHS, {"d": 1, "tag": "a"}),
        pipes.fetchone(pool, DOUBLE_READ, (4,)),
        pipes.fetchone(pool, TENTHS, {"d": 2, "tag": "b"}),
    )
    assert list(mixed) == [(10, "a", "many"), (8,), (5, "b", "many")]


async def test_when_the_reads_run_together_fail_each_is_sent_again_alone(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    pipes = pipelines(1)
    results = await asyncio.gather(
        *(pipes.fetchone(pool, TENTHS, {"d": d, "tag": "t"}) for d in (1, 2, 0, 5)), return_exceptions=True
    )
    assert isinstance(results[2], psycopg.errors.DivisionByZero)
    assert [results[i] for i in (0, 1, 3)] == [(10, "t", "one"), (5, "t", "one"), (2, "t", "one")]
    # Values that do not go in one array (an int among texts) are sent each alone too.
    odd: Any = await asyncio.gather(
        pipes.fetchone(pool, TENTHS, {"d": 1, "tag": "text"}),
        pipes.fetchone(pool, TENTHS, {"d": 2, "tag": 7}),
        return_exceptions=True,
    )
    assert odd[0] == (10, "text", "one") and odd[1] == (5, "7", "one")
    rows: Any = await asyncio.gather(*(pipes.fetchone(pool, TENTHS, {"d": d, "tag": "z"}) for d in (1, 2)))
    assert list(rows) == [(10, "z", "many"), (5, "z", "many")]  # the statement still works


def test_a_many_takes_the_same_placeholders_and_only_for_reads() -> None:
    with pytest.raises(ValueError, match="same placeholders"):
        Statement.of("SELECT %(a)s, %(b)s", read_only=True, many="SELECT %(b)s, %(a)s")
    with pytest.raises(ValueError, match="same placeholders"):
        Statement.of("SELECT %s", read_only=True, many="SELECT %s, %s")
    with pytest.raises(ValueError, match="only a read"):
        Statement.of("SELECT %s", many="SELECT %s")


async def test_writes_of_a_group_commit_together_and_a_failure_undoes_none_of_the_others(
    pool: AsyncConnectionPool,
    pipelines: Callable[[int], Pipelines],
) -> None:
    write = Statement.of("INSERT INTO pipeline_rows VALUES (100 / %s) RETURNING n, transaction_timestamp()")
    pipes = pipelines(1)
    await pipes.fetchone(pool, write, (100,))  # prepared (n = 1)
    together: Any = await asyncio.gather(*(pipes.fetchone(pool, write, (d,), group="a") for d in (50, 25, 20)))
    assert [r[0] for r in together] == [2, 4, 5] and len({r[1] for r in together}) == 1
    results = await asyncio.gather(
        *(pipes.fetchone(pool, write, (d,), group="b") for d in (10, 0, 4)), return_exceptions=True
    )
    assert isinstance(results[1], psycopg.errors.DivisionByZero)
    assert [r[0] for r in results if isinstance(r, tuple)] == [10, 25]  # sent again alone, committed once
    assert await stored(pool) == [1, 2, 4, 5, 10, 25]


async def test_parameter_types_that_change_get_their_own_prepared_statement(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    echo = Statement.of("SELECT coalesce(%s, 'none'), %s::bytea")
    pipes = pipelines(1)
    rows: Any = await asyncio.gather(
        pipes.fetchone(pool, echo, ("text", b"\x00\x01")),
        pipes.fetchone(pool, echo, (None, None)),
        pipes.fetchone(pool, echo, ("again", b"")),
    )
    assert list(rows) == [("text", b"\x00\x01"), ("none", None), ("again", b"")]
    assert await pipes.fetchone(pool, Statement.of("SELECT 1 WHERE false"), ()) is None


async def test_a_broken_connection_fails_its_queries_and_is_replaced(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    pipes = pipelines(1)
    (_, pid) = await pipes.fetchone(pool, DOUBLE, (1,))
    sleeping = asyncio.ensure_future(pipes.fetchone(pool, Statement.of("SELECT pg_sleep(5)"), ()))
    await asyncio.sleep(0.2)
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        await asyncio.wait_for(sleeping, 5)
    (doubled, new_pid) = await pipes.fetchone(pool, DOUBLE, (21,))
    assert doubled == 42 and new_pid != pid
    # A connection that drops while idle is noticed at once: the next query never sees it.
    async with pool.connection() as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (new_pid,))
    await asyncio.sleep(0.3)
    (doubled, third_pid) = await pipes.fetchone(pool, DOUBLE, (5,))
    assert doubled == 10 and third_pid not in (pid, new_pid)


async def test_a_caller_that_goes_away_leaves_the_others_their_rows(
    pool: AsyncConnectionPool, pipelines: Callable[[int], Pipelines]
) -> None:
    pipes = pipelines(1)
    slow = asyncio.ensure_future(pipes.fetchone(pool, Statement.of("SELECT pg_sleep(0.2), 'slow'"), ()))
    await asyncio.sleep(0.05)
    slow.cancel()
    assert await pipes.fetchone(pool, DOUBLE, (3,)) == (6, (await pipes.fetchone(pool, DOUBLE, (0,)))[1])
    assert slow.cancelled()


def test_the_pool_leaves_connections_beside_the_record_paths() -> None:
    assert Settings.from_env({"KVBOX_METADATA_POOL_SIZE": "3"}).metadata_pool_size == 3
    for value in ("2", "0", "-5"):
        with pytest.raises(ValueError, match="at least 3"):
            Settings.from_env({"KVBOX_METADATA_POOL_SIZE": value})
