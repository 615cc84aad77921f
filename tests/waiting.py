"""Waiting on a condition with a deadline — never on a guess of how long something takes, which a
busy 2-core machine (every test's CI) proves wrong sooner or later."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T]], within: float, what: str = ..., every: float = ...
) -> T: ...
@overload
async def wait_until(predicate: Callable[[], T], within: float, what: str = ..., every: float = ...) -> T: ...


async def wait_until(
    predicate: Callable[[], Any], within: float, what: str = "the condition", every: float = 0.05
) -> Any:
    """Call ``predicate`` (a function or a coroutine function) until it returns something true,
    and return that; ``AssertionError`` naming ``what`` once ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not so after {within} s"
        await asyncio.sleep(every)


def wait_until_blocking(predicate: Callable[[], T], within: float, what: str = "the condition",
                        every: float = 0.05) -> T:  # fmt: skip
    """``wait_until`` for code that has no event loop running (a hypothesis example, a thread)."""
    deadline = time.monotonic() + within
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what}: not so after {within} s"
        time.sleep(every)
    return value
