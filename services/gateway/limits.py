"""Per-key rate limiting: a token bucket per API key, in this gateway replica's memory.

Each replica enforces the configured rate on its own share of traffic; with N replicas behind a
load balancer a key can reach N × rate. That is the usual trade (no shared state on the hot
path); operators size the rate per replica.
"""

from __future__ import annotations

import math
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> float:
        """Take a token; return 0 when granted, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Requests per second per key; ``rate <= 0`` turns limiting off."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def retry_after(self, key: str) -> int | None:
        """None when the request may go ahead, else whole seconds to wait (at least 1)."""
        if self.rate <= 0:
            return None
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        wait = bucket.take(now)
        return None if wait == 0 else max(1, math.ceil(wait))
