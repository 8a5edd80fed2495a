"""The SQLite index's point reads wait for the end of the event loop's turn and run together."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Sequence

import pytest

from kvbox.backends.sqlite.reads import TurnReads
from kvbox.core.errors import StorageError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_reads_of_one_turn_run_together_after_it_in_order() -> None:
    reads = TurnReads()
    ran: list[int] = []

    def read(n: int) -> int:
        ran.append(n)
        return n * 10

    tasks = [asyncio.ensure_future(reads.run(functools.partial(read, n))) for n in range(5)]
    await asyncio.sleep(0)  # the tasks ask for their reads in this turn
    assert ran == []  # nothing has run yet: the turn is not over
    assert await asyncio.gather(*tasks) == [0, 10, 20, 30, 40]
    assert ran == [0, 1, 2, 3, 4]
    assert await reads.run(lambda: read(9)) == 90  # a later turn collects anew


async def test_a_failing_read_fails_only_its_caller() -> None:
    reads = TurnReads()

    def broken() -> int:
        raise StorageError("the index failed")

    results = await asyncio.gather(
        reads.run(lambda: 1), reads.run(broken), reads.run(lambda: 3), return_exceptions=True
    )
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], StorageError)


async def test_reads_given_one_reader_go_to_one_call_of_it() -> None:
    reads = TurnReads()
    calls: list[list[int]] = []

    def read_all(numbers: Sequence[int]) -> list[int]:
        calls.append(list(numbers))
        if 13 in numbers:
            raise StorageError("unlucky")
        return [n * 10 for n in numbers]

    first = await asyncio.gather(*(reads.run_together(read_all, n) for n in range(4)), reads.run(lambda: -1))
    assert first == [0, 10, 20, 30, -1]
    assert calls == [[0, 1, 2, 3]]
    # One argument that fails the call: each is read again alone, and only its caller fails.
    calls.clear()
    second = await asyncio.gather(*(reads.run_together(read_all, n) for n in (12, 13, 14)), return_exceptions=True)
    assert second[0] == 120 and second[2] == 140 and isinstance(second[1], StorageError)
    assert calls == [[12, 13, 14], [12], [13], [14]]


async def test_a_cancelled_callers_read_is_skipped() -> None:
    reads = TurnReads()
    ran: list[str] = []
    first = asyncio.ensure_future(reads.run(lambda: ran.append("first")))
    second = asyncio.ensure_future(reads.run(lambda: ran.append("second")))
    await asyncio.sleep(0)
    first.cancel()
    await second
    assert ran == ["second"]
    assert first.cancelled()


def test_a_read_from_another_loop_runs_at_once_while_a_turn_collects() -> None:
    reads = TurnReads()
    asked = threading.Event()
    release = threading.Event()
    results: list[str] = []

    async def collecting() -> None:
        task = asyncio.ensure_future(reads.run(lambda: results.append("main")))
        await asyncio.sleep(0)  # the read is asked for; its turn has not ended
        asked.set()
        release.wait(10)  # hold the turn while the other loop reads (blocking on purpose)
        await task

    async def other() -> None:
        results.append("other asked")
        await reads.run(lambda: results.append("other read"))

    thread = threading.Thread(target=lambda: asyncio.run(collecting()))
    thread.start()
    assert asked.wait(10)
    asyncio.run(other())  # does not wait for the first loop's turn
    release.set()
    thread.join(10)
    assert results == ["other asked", "other read", "main"]
