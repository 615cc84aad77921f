"""Writes a batch's rows to the warehouse, telling *unavailable* from *rejected*.

- Unavailable (unreachable, overloaded, timing out: ``WarehouseUnavailable``): wait and retry,
  holding the batch — and with it the offsets — so nothing is lost meanwhile.
- Rejected (the data itself: ``WarehouseError``): never retried as it is. The insert is split in
  halves until the rows that cause it stand alone; each becomes a dead letter with the
  warehouse's reason and the rest lands. One bad row costs one row, never the stage.

Every row is idempotent (``pipeline.rows``), so the order of tables does not matter for
correctness; events go first so that they are queryable soonest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from pipeline.canonical import to_rows
from pipeline.retry import DEFAULT_BACKOFF, Backoff, retrying
from pipeline.rows import Writes
from pipeline.warehouse import Warehouse, WarehouseError, WarehouseUnavailable
from sluice.envelope import DeadLetter

log = logging.getLogger("sluice.worker")

_encoder = msgspec.json.Encoder()


class WarehouseSink:
    def __init__(self, warehouse: Warehouse, retry: Backoff = DEFAULT_BACKOFF) -> None:
        self.warehouse = warehouse
        self.retry = retry

    async def write(self, writes: Writes) -> tuple[dict[str, int], list[DeadLetter]]:
        """Write every non-empty table; returns rows written per table and the dead letters of
        the rows the warehouse rejected."""
        written: dict[str, int] = {}
        letters: list[DeadLetter] = []
        tables: list[tuple[str, Sequence[Any], Callable[[Sequence[Any]], bytes]]] = [
            ("events", writes.events, lambda rows: to_rows(list(rows)))
        ]
        tables += [(table, rows, _encoder.encode) for table, rows in writes.tables()]
        for table, rows, encode in tables:
            if rows:
                rejected = await self.insert(table, rows, encode)
                written[table] = len(rows) - len(rejected)
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
        await retrying(f"insert into {table}", lambda: asyncio.to_thread(self.warehouse.insert_json, table, rows),
                       (WarehouseUnavailable,), self.retry)  # fmt: skip


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
