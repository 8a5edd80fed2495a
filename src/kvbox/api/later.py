"""One callback run later on the event loop, however often it is asked for meanwhile.

The observer counts and logs a batch of requests in one timer, and the access log writes its
lines in another: both are asked again and again before they run, and schedule once.
An ask on another loop than the one holding the call (an app used from one `asyncio.run`
after another, whose first loop closed before the call ran) schedules it there too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Later:
    """Runs `callback` once, `delay_s` after the first `ask` since it last ran (0: once the
    loop's current turn is over)."""

    def __init__(self, callback: Callable[[], None], delay_s: float = 0.0) -> None:
        self._callback = callback
        self._delay_s = delay_s
        self._on: asyncio.AbstractEventLoop | None = None

    def ask(self) -> None:
        """Have the callback run on the running loop (`RuntimeError` without one)."""
        loop = asyncio.get_running_loop()
        if self._on is loop:
            return
        self._on = loop
        if self._delay_s:
            loop.call_later(self._delay_s, self._run)
        else:
            loop.call_soon(self._run)

    def _run(self) -> None:
        self._on = None
        self._callback()
