"""One retry policy: exponential backoff with jitter, for everything that waits out an outage.

Only *unavailability* is retried (Kafka or ClickHouse unreachable, overloaded, timing out); a
rejection of the data itself is never retried here — the caller isolates it instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("sluice.retry")


@dataclass(frozen=True)
class Backoff:
    first: float = 0.5
    cap: float = 10.0

    def delays(self) -> _Delays:
        return _Delays(self)


class _Delays:
    def __init__(self, policy: Backoff) -> None:
        self.policy, self.attempt = policy, 0

    def next(self) -> float:
        """The next wait: uniform in [c/2, c] with c = min(cap, first·2ⁿ) ("equal jitter": at
        least half the backoff, so that an outage is not hammered, and spread over the other
        half, so that workers that failed together do not retry together)."""
        ceiling = min(self.policy.cap, self.policy.first * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(ceiling / 2, ceiling)


DEFAULT_BACKOFF = Backoff()


async def retrying(
    what: str, call: Callable[[], Awaitable[T]], retry_on: tuple[type[BaseException], ...],
    policy: Backoff = DEFAULT_BACKOFF, *, within: float | None = None,
) -> T:  # fmt: skip
    """``await call()`` until it returns; waits out the exceptions in ``retry_on``, logging each.
    ``within``: seconds after which such an exception is raised instead (none: retry for ever)."""
    delays = policy.delays()
    deadline = None if within is None else time.monotonic() + within
    while True:
        try:
            return await call()
        except retry_on as exc:
            delay = delays.next()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
