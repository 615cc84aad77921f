"""The dedupe window, kept: expired message ids leave the state store (``SeenPruner``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from pipeline.state import RAW_SOURCE, Seen
from pipeline.statestore import StateStore


class SeenPruner:
    """Removes dedupe entries (``Seen``, under ``prefix``) older than the window plus a margin, so
    the store does not grow for ever: a slice of keys per call, a full pass, then a rest.

    A slice is 2,000 ids (a few ms of a step): a pass over millions of ids takes minutes, well
    inside the hourly interval, and adds little to any one step.

    Pruning changes no answer: an entry past the window no longer makes a copy a duplicate. The
    margin (a day) covers a worker working through a backlog, whose events' ``received_at`` lies
    behind the clock. Call it *before* a batch is processed, so that a key the batch writes again
    is deleted first and written after, in the changelog and locally.
    """

    def __init__(
        self, state: StateStore, prefix: bytes, window: float, *, margin: float = 86400.0,
        interval: float = 3600.0, per_call: int = 2_000, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.state, self.prefix, self.window, self.margin = state, prefix, window, margin
        self.interval, self.per_call, self.clock = interval, per_call, clock
        self.cursor: bytes | None = None
        self.next_pass = clock() + 60.0  # not in the middle of start-up

    def step(self, keep: Callable[[bytes], bool] = lambda key: False) -> int:
        """Stage deletes for the expired entries of the next slice, but not those ``keep`` names
        (written again by a batch not yet committed); returns how many."""
        now = self.clock()
        if self.cursor is None:
            if now < self.next_pass:
                return 0
            self.cursor = self.prefix
        items, self.cursor = self.state.scan(self.prefix, self.cursor, self.per_call)
        removed = 0
        for key, value in items:
            seen = _seen_decoder.decode(value)
            partition = seen.source[0] % RAW_SOURCE  # a raw record's source is RAW_SOURCE + its partition
            if now - seen.at > self.window + self.margin and partition in self.state.ready and not keep(key):
                self.state.delete(key, partition)
                removed += 1
        if self.cursor is None:
            self.next_pass = now + self.interval
        return removed


_seen_decoder = msgspec.json.Decoder(Seen)
