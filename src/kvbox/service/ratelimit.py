"""Token-bucket rate limits: per store (as on the platform) and per user.

Buckets live in the memory of each server process. With N worker processes each process
enforces 1/N of every limit, so the totals hold when the load spreads over the workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.core.clock import Clock
from kvbox.core.errors import RateLimitExceededError

MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    enabled: bool = True
    store_per_second: int = 60
    records_per_second: int = 200
    user_per_second: int = 4000


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: int) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    def __init__(self, clock: Clock, limits: Limits, *, processes: int = 1) -> None:
        self._clock = clock
        self.limits = limits
        self._share = max(1, processes)
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Requests refused so far, by the limit they hit (read by the metrics).
        self.refused: dict[str, int] = {}

    def limit_for(self, *, record_op: bool, store_op: bool) -> int:
        """The advertised limit (X-RateLimit-Limit) for a kind of request."""
        if record_op:
            return self.limits.records_per_second
        if store_op:
            return self.limits.store_per_second
        return self.limits.user_per_second

    def check(self, *, user_key: str, store_key: str | None, record_op: bool) -> None:
        """Take one token from the store's bucket and the user's; raise 429 when either is empty."""
        if store_key is not None:
            self.check_store(store_key, record_op=record_op)
        self.check_user(user_key)

    def check_user(self, user_key: str) -> None:
        """The per-user (or per client address) budget, taken before anything else is done."""
        if self.limits.enabled:
            self._take(("user", user_key), self.limits.user_per_second, self._clock.now_ms())

    def check_store(self, store_id: str, *, record_op: bool) -> None:
        """The per-store budget: record reads/writes/deletes, or other store operations."""
        if self.limits.enabled:
            limit = self.limits.records_per_second if record_op else self.limits.store_per_second
            self._take(("records" if record_op else "store", store_id), limit, self._clock.now_ms())

    def _take(self, key: tuple[str, str], limit: int, now: int) -> None:
        rate = max(1.0, limit / self._share)  # tokens per second in this process
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(rate, now)
        else:
            elapsed = max(0, now - bucket.stamp) / 1000
            bucket.tokens = min(rate, bucket.tokens + elapsed * rate)
            bucket.stamp = now
        if bucket.tokens < 1:
            self.refused[key[0]] = self.refused.get(key[0], 0) + 1
            raise RateLimitExceededError(limit)
        bucket.tokens -= 1

    def _evict(self, now: int) -> None:
        # Buckets idle for a second are full again: dropping them changes nothing.
        idle = [k for k, b in self._buckets.items() if now - b.stamp > 1000]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= MAX_BUCKETS:
            self._buckets.clear()
