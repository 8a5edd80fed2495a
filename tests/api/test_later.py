"""`Later`: one run per batch of asks, and a new loop takes over from one that closed."""

from __future__ import annotations

import asyncio

from kvbox.api.later import Later


def test_many_asks_in_a_turn_run_the_callback_once_after_it() -> None:
    runs: list[int] = []
    later = Later(lambda: runs.append(1))

    async def main() -> list[int]:
        for _ in range(5):
            later.ask()
        seen = list(runs)
        await asyncio.sleep(0)
        later.ask()  # a new batch
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(main()) == []
    assert runs == [1, 1]


def test_an_ask_on_a_new_loop_runs_what_a_closed_loop_left() -> None:
    runs: list[int] = []
    later = Later(lambda: runs.append(1), delay_s=0.05)

    async def ask(wait_s: float) -> None:
        later.ask()
        await asyncio.sleep(wait_s)

    asyncio.run(ask(0))  # the loop closes before the call is due
    assert runs == []
    asyncio.run(ask(0.3))
    assert runs == [1]
