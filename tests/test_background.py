"""The worker's background threads (warehouse merges, RocksDB compactions) run at a lower CPU
priority than its event path (``pipeline.background``)."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pipeline.background import NICE, lower_background

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="threads are listed in /proc")

PR_SET_NAME = 15


@contextmanager
def named_thread(name: str) -> Iterator[int]:
    """A thread of this process named ``name`` (as chDB and RocksDB name theirs); its id."""
    ready, done = threading.Event(), threading.Event()
    tid: list[int] = []

    def body() -> None:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode(), 0, 0, 0)
        tid.append(threading.get_native_id())
        ready.set()
        done.wait()

    thread = threading.Thread(target=body)
    thread.start()
    ready.wait()
    try:
        yield tid[0]
    finally:
        done.set()
        thread.join()


def nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def ids(done: set[tuple[int, int]]) -> set[int]:
    return {tid for tid, _ in done}


def test_merge_and_compaction_threads_are_lowered_once_and_nothing_else() -> None:
    with (
        named_thread("MergeMutate") as merge,
        named_thread("rocksdb:low") as compaction,
        named_thread("QueryPipelineEx") as insert,  # an insert's: on the event path, left alone
        named_thread("rocksdb:high") as flush,  # memtable flushes: a stalled flush stalls writes
    ):
        base = nice(threading.get_native_id())  # the test runner's own (0, unless run under nice)
        done: set[tuple[int, int]] = set()
        # (this process may hold real ones too, from other tests' stores and warehouses)
        assert lower_background(done) >= 2
        assert nice(merge) == nice(compaction) == max(NICE, base)
        assert nice(insert) == nice(flush) == base
        assert {merge, compaction} <= ids(done)
        assert not {insert, flush} & ids(done)
        before = set(done)
        lower_background(done)
        assert before <= done  # a live thread once lowered stays known (not lowered again)


def test_a_thread_started_later_is_lowered_on_the_next_look() -> None:
    base = nice(threading.get_native_id())
    done: set[tuple[int, int]] = set()
    with named_thread("MergeMutate") as first:
        lower_background(done)
        with named_thread("MergeMutate") as second:
            assert nice(second) == base
            lower_background(done)
            assert second in ids(done)
            assert nice(second) == nice(first) == max(NICE, base)


def test_the_id_of_an_ended_thread_is_forgotten() -> None:
    done: set[tuple[int, int]] = set()
    with named_thread("MergeMutate") as ended:
        lower_background(done)
    assert ended in ids(done)
    lower_background(done)
    assert ended not in ids(done)  # a later thread given the same id is looked at afresh
