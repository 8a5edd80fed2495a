"""Time, injected: services take a Clock, tests move a FakeClock instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FakeClock:
    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, *, ms: int = 0, seconds: float = 0, days: float = 0) -> None:
        self._now += ms + int(seconds * 1000) + int(days * 86_400_000)


def iso_ms(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and `Z`, as the platform writes timestamps."""
    second, milli = divmod(ms, 1000)
    return _iso_of_second(second) + _MILLIS[milli]


_MILLIS = [f"{n:03d}Z" for n in range(1000)]


@lru_cache(maxsize=4096)
def _iso_of_second(second: int) -> str:
    # Key listings format a time per key; records written in the same second share it.
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def http_date(ms: int) -> str:
    return _http_date_of_second(ms // 1000)


@lru_cache(maxsize=4096)
def _http_date_of_second(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch of an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`, or one of the
    two obsolete forms RFC 9110 still accepts); None when it is not one."""
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # the obsolete forms carry no zone: HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())
