"""Several processes of one command (``--processes N``): started, told of SIGTERM/SIGINT, awaited."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any


def supervise(target: Callable[..., None], args: Sequence[tuple[Any, ...]], name: str) -> None:
    """Run ``target(*args[n])`` in a spawned process per entry; forward SIGTERM and SIGINT to all
    of them, and return once every one has stopped."""
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=target, args=each, name=f"{name}-{n}") for n, each in enumerate(args)]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for child in children:
        child.join()
