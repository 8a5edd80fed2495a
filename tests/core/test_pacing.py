"""Background batches: sized to a target time, and followed by a pause at least as long."""

from __future__ import annotations

import pytest

from kvbox.core.pacing import MIN_PAUSE_S, TARGET_BATCH_S, Pacer

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("kvbox.core.pacing.time.monotonic", c.monotonic)
    monkeypatch.setattr("kvbox.core.pacing.asyncio.sleep", c.sleep)
    return c


async def test_a_slow_full_batch_shrinks_the_next_and_is_paused_for(clock: Clock) -> None:
    pacer = Pacer(100)
    clock.now += 4 * TARGET_BATCH_S  # the batch of 100 took four times the target
    await pacer.pause(100)
    assert pacer.size == 25
    assert clock.slept == [4 * TARGET_BATCH_S]


async def test_a_quick_full_batch_grows_the_next_at_most_twofold_within_bounds(clock: Clock) -> None:
    pacer = Pacer(100, most=150)
    clock.now += TARGET_BATCH_S / 10
    await pacer.pause(100)
    assert pacer.size == 150
    assert clock.slept == [MIN_PAUSE_S]  # never less than the least pause
    pacer = Pacer(20, least=10)
    clock.now += 1.0
    await pacer.pause(20)
    assert pacer.size == 10


async def test_a_partial_batch_says_nothing_about_size(clock: Clock) -> None:
    pacer = Pacer(100)
    clock.now += 1.0
    await pacer.pause(40)
    await pacer.pause()
    assert pacer.size == 100
    assert clock.slept[0] == 1.0


async def test_start_restarts_the_clock(clock: Clock) -> None:
    pacer = Pacer(100)
    clock.now += 5.0  # idle between runs: not the batch's time
    pacer.start()
    clock.now += TARGET_BATCH_S
    await pacer.pause(100)
    assert pacer.size == 100
    assert clock.slept == [MIN_PAUSE_S]
