"""The worker's background threads at a lower CPU priority than its event path.

A worker process holds, beside the Python thread that processes events, the threads of two
engines that keep their data in shape: the embedded warehouse's merges (ClickHouse's
``MergeMutate`` pool) and RocksDB's compactions (``rocksdb:low``). Neither is urgent — a part
merged a few seconds later costs nothing — but each merge or compaction is a burst of a whole
core, and on a small machine shared with Kafka and the gateway (the laptop ``make run`` is for)
such a burst takes the core the event path needed: steps wait, freshness jumps by seconds.
ClickHouse offers the same for a server (``os_threads_nice_value_merge_mutate``); chDB reads no
server configuration, and raising a thread's nice value needs no privilege, so the worker does
it here. They still get every cycle the event path leaves idle.

Linux only (threads are listed in ``/proc/self/task``); elsewhere this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("sluice.worker")

BACKGROUND_THREADS = ("MergeMutate", "rocksdb:low")
"""Thread names (their start): the warehouse's merges and mutations, RocksDB's compactions."""
NICE = 10
"""Their nice value: under contention such a thread gets about a tenth of a core's share."""
EVERY = 10.0
"""Seconds between looks for new threads (the engines start them as they need them)."""


def lower_background(done: set[tuple[int, int]], tasks: Path = Path("/proc/self/task")) -> int:
    """Set ``NICE`` on this process's background threads not yet in ``done`` (updated), and
    return how many were lowered now.

    A thread is known by its id and start time: the kernel gives a later thread the id of one that
    ended, and that thread is looked at afresh. Threads that ended leave ``done``; a thread that
    ends meanwhile is skipped."""
    threads: dict[tuple[int, int], str] = {}
    try:
        entries = list(tasks.iterdir())
    except OSError:  # not Linux
        return 0
    for entry in entries:
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended
            continue
        name, after = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        threads[(int(entry.name), int(after[19]))] = name  # field 22 of proc(5): the start time
    done.intersection_update(threads)
    lowered = 0
    for thread, name in threads.items():
        if thread in done or not name.startswith(BACKGROUND_THREADS):
            continue
        tid = thread[0]
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(NICE, os.getpriority(os.PRIO_PROCESS, tid)))
        except OSError:  # ended, or not ours to change
            continue
        done.add(thread)
        lowered += 1
    return lowered


async def keep_background_low(stopping: asyncio.Event) -> None:
    """``lower_background`` every ``EVERY`` seconds until ``stopping`` is set."""
    done: set[tuple[int, int]] = set()
    while not stopping.is_set():
        if lowered := await asyncio.to_thread(lower_background, done):
            log.debug("%d background threads lowered to nice %d", lowered, NICE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), EVERY)
