"""Writes a batch's rows to the warehouse, in the order that keeps replays exact.

Order: events, aliases, users, companies, experiment units — all idempotent rows — and the
rollups last, because their rows carry the fence (see ``pipeline.processor``): once the rollups
are in, everything before them is too. ``write`` blocks (backpressure on the stream) while the
warehouse is down or refuses a statement, retrying with backoff; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec

from pipeline.canonical import to_rows
from pipeline.processor import Writes
from pipeline.warehouse import Warehouse, WarehouseError

log = logging.getLogger("sluice.worker")

_encoder = msgspec.json.Encoder()


class WarehouseSink:
    def __init__(self, warehouse: Warehouse, retry_seconds: float = 0.5, max_retry_seconds: float = 10.0) -> None:
        self.warehouse = warehouse
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds

    async def write(self, writes: Writes) -> dict[str, int]:
        """Write every non-empty table; returns rows written per table."""
        tables: list[tuple[str, Sequence[object]]] = [
            ("user_aliases", writes.aliases),
            ("users", list(writes.users.values())),
            ("companies", list(writes.companies.values())),
            ("experiment_units", list(writes.units.values())),
            ("rollups_1m", list(writes.rollups.values())),
        ]
        written: dict[str, int] = {}
        if writes.events:
            await self._insert("events", to_rows(writes.events))
            written["events"] = len(writes.events)
        for table, rows in tables:
            if rows:
                await self._insert(table, _encoder.encode(rows))
                written[table] = len(rows)
        return written

    async def fences(self, topic: str) -> dict[int, int]:
        """:func:`fences`, waiting for the warehouse as inserts do."""
        delay = self.retry_seconds
        while True:
            try:
                return await asyncio.to_thread(fences, self.warehouse, topic)
            except WarehouseError as exc:
                log.warning("reading the fences failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_seconds)

    async def insert(self, table: str, rows: bytes) -> None:
        await self._insert(table, rows)

    async def _insert(self, table: str, rows: bytes) -> None:
        delay = self.retry_seconds
        while True:
            try:
                await asyncio.to_thread(self.warehouse.insert_json, table, rows)
                return
            except WarehouseError as exc:
                # Unavailable: wait it out. Refused: a bug or a schema drift that an operator must
                # fix; holding the batch (and the offsets) loses nothing meanwhile.
                log.warning("insert into %s failed, retrying in %.1fs: %s", table, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_seconds)


def fences(warehouse: Warehouse, topic: str) -> dict[int, int]:
    """The last counted offset per partition of ``topic``, from the rollup rows themselves."""
    out = warehouse.execute(
        f"SELECT source_partition, max(source_offset) FROM rollups_1m WHERE source_topic = '{topic}' "
        "GROUP BY source_partition",
        "TSV",
    )
    return {int(p): int(o) for p, o in (line.split(b"\t") for line in out.splitlines() if line)}
