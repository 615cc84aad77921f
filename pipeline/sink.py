"""Writes a batch's rows to the warehouse, telling *unavailable* from *rejected*.

- Unavailable (unreachable, overloaded, timing out: ``WarehouseUnavailable``): wait and retry,
  holding the batch — and with it the offsets — so nothing is lost meanwhile.
- Rejected (the data itself: ``WarehouseError``): never retried as it is. The insert is split in
  halves until the rows that cause it stand alone; each becomes a dead letter with the
  warehouse's reason and the rest lands. One bad row costs one row, never the stage.

Every row is idempotent (``pipeline.rows``), so the order of tables does not matter for
correctness; events go first so that they are queryable soonest — while their batch is still
being processed (:class:`EventRows`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from pipeline.canonical import to_rows
from pipeline.rows import Writes
from pipeline.warehouse import Warehouse, WarehouseError, WarehouseUnavailable
from sluice.envelope import DeadLetter
from sluice.retry import DEFAULT_BACKOFF, Backoff, retrying

log = logging.getLogger("sluice.worker")

_encoder = msgspec.json.Encoder()


class WarehouseSink:
    def __init__(self, warehouse: Warehouse, retry: Backoff = DEFAULT_BACKOFF) -> None:
        self.warehouse = warehouse
        self.retry = retry
        self.lock = asyncio.Lock()
        """One insert at a time: a batch's write goes on beside the next batch and the dead-letter
        stage (``pipeline.worker``), and a ClickHouse server refuses a second query in a session
        that is busy (clickhouse-connect's client has one session)."""

    async def write(self, writes: Writes, early: EventRows | None = None) -> tuple[dict[str, int], list[DeadLetter]]:
        """Write every non-empty table (the events ``early`` has not written yet); returns rows
        written per table and the dead letters of the rows the warehouse rejected."""
        sent, rejected = await early.finish() if early is not None else (0, [])
        written: dict[str, int] = {"events": sent - len(rejected)} if sent else {}
        letters = [_letter("events", _encode_events([row]), reason) for row, reason in rejected]
        tables: list[tuple[str, Sequence[Any], Callable[[Sequence[Any]], bytes]]] = [
            ("events", writes.events[sent:], _encode_events)
        ]
        tables += [(table, rows, _encoder.encode) for table, rows in writes.tables()]
        for table, rows, encode in tables:
            if rows:
                rejected = await self.insert(table, rows, encode)
                written[table] = written.get(table, 0) + len(rows) - len(rejected)
                letters += [_letter(table, encode([row]), reason) for row, reason in rejected]
        return written, letters

    async def insert(
        self, table: str, rows: Sequence[Any], encode: Callable[[Sequence[Any]], bytes] = _encoder.encode
    ) -> list[tuple[Any, str]]:
        """Insert ``rows``, isolating rejected ones by bisection; returns (row, reason) of each."""
        try:
            await self._insert(table, encode(rows))
            return []
        except WarehouseError as exc:
            if len(rows) == 1:
                log.warning("the warehouse rejected a row of %s: %s", table, exc)
                return [(rows[0], str(exc)[:2000])]
        middle = len(rows) // 2
        return await self.insert(table, rows[:middle], encode) + await self.insert(table, rows[middle:], encode)

    async def _insert(self, table: str, rows: bytes) -> None:
        """One insert, waiting out unavailability; raises ``WarehouseError`` when rejected."""
        async with self.lock:
            await retrying(f"insert into {table}", lambda: asyncio.to_thread(self.warehouse.insert_json, table, rows),
                           (WarehouseUnavailable,), self.retry)  # fmt: skip


class EventRows:
    """A batch's event rows, written while the rest of the batch is processed.

    An event's row is final once the event is processed (the other tables' rows are not: they
    are the batch's totals), and an insert runs in a thread that leaves the interpreter's lock to
    the processing — chDB's engine and clickhouse-connect's HTTP both do. So every ``every`` new
    rows :meth:`poll` hands them to the warehouse, one insert at a time, and the insert's time
    hides behind the Python work of the next rows (it was a fifth of a step, spent waiting).

    The rules of the sink hold: rows go in before the batch's commit (``finish`` waits for the
    last insert), a rejected row becomes a dead letter, an unavailable warehouse is waited out;
    a batch that fails midway is processed again, and its rows written again are the same rows.
    """

    def __init__(self, sink: WarehouseSink, events: list[Any], every: int) -> None:
        self.sink = sink
        self.events = events
        """The batch's event rows as processing appends them (``Writes.events``)."""
        self.every = every
        self.sent = 0
        """Rows handed to the warehouse so far (``events[:sent]``)."""
        self.rejected: list[tuple[Any, str]] = []
        self.task: asyncio.Task[list[tuple[Any, str]]] | None = None

    def poll(self) -> None:
        """Start inserting the rows not yet sent, if there are ``every`` of them and no insert
        is in flight. Raises what a finished insert raised (the step then fails as a whole)."""
        if self.task is not None:
            if not self.task.done():
                return
            self.rejected += self.task.result()
            self.task = None
        if len(self.events) - self.sent >= self.every:
            rows = self.events[self.sent :]
            self.sent = len(self.events)
            self.task = asyncio.create_task(self.sink.insert("events", rows, _encode_events))

    async def finish(self) -> tuple[int, list[tuple[Any, str]]]:
        """Wait for the insert in flight; the rows sent, and those the warehouse rejected."""
        if self.task is not None:
            self.rejected += await self.task
            self.task = None
        return self.sent, self.rejected

    async def abandon(self) -> None:
        """The batch failed: wait for the insert in flight to end, whatever its outcome — its rows
        are written again with the batch's next try, and are the same rows. Not cancelled: its
        thread would go on regardless, and the next try's insert would overlap it (a ClickHouse
        server refuses a second query in a busy session). A cancellation of the step itself
        still goes through."""
        task, self.task = self.task, None
        if task is not None:
            task.add_done_callback(_outcome_seen)
            with contextlib.suppress(Exception):
                await asyncio.shield(task)


def _outcome_seen(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: the batch failed anyway, and goes again


def _encode_events(rows: Sequence[Any]) -> bytes:
    return to_rows(list(rows))


def _letter(table: str, row: bytes, reason: str) -> DeadLetter:
    """A rejected row as a dead letter; its id is the row's content, so the same row rejected
    again (a replay) is the same letter in the ``dlq`` table."""
    digest = hashlib.sha256(table.encode() + b"\x00" + row).hexdigest()[:32]
    return DeadLetter(
        family="", route=f"warehouse:{table}", org_id=_org(row), reason=f"warehouse rejected the row: {reason}",
        received_at=time.time(), payload=msgspec.Raw(row), source="sink", id=f"sink:{table}:{digest}",
    )  # fmt: skip


def _org(row: bytes) -> str:
    try:
        [decoded] = msgspec.json.decode(row)
        org = decoded.get("org_id", "") if isinstance(decoded, dict) else ""
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError):
        return ""
    return org if isinstance(org, str) else ""
