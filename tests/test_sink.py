"""The warehouse sink on chDB: event rows written while their batch is still being processed
(``EventRows``), with the sink's rules intact — every row in before the batch ends, a rejected
row a dead letter, the rest landed."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from pipeline.rows import Writes
from pipeline.sink import EventRows, WarehouseSink
from pipeline.warehouse import Warehouse, WarehouseError
from sluice.sql import Parameters
from tests.test_processor import event

pytestmark = pytest.mark.clickhouse


class Rejecting:
    """The real warehouse, except that it refuses any insert holding ``marker`` (as ClickHouse
    refuses a block with one bad row: the whole insert)."""

    def __init__(self, warehouse: Warehouse, marker: bytes) -> None:
        self.warehouse, self.marker = warehouse, marker
        self.database = warehouse.database
        self.inserts: list[int] = []
        """Rows of each insert that landed."""

    def execute(
        self, sql: str, fmt: str = "TSVWithNames", *, parameters: Parameters | None = None, behind_writes: bool = False
    ) -> bytes:
        return self.warehouse.execute(sql, fmt, parameters=parameters)

    def insert_json(self, table: str, rows: bytes) -> None:
        if self.marker in rows:
            raise WarehouseError("Cannot parse input: the marked row")
        self.warehouse.insert_json(table, rows)
        self.inserts.append(len(msgspec.json.decode(rows)))

    def close(self) -> None: ...


async def test_event_rows_land_while_the_batch_is_processed_and_a_rejected_row_is_a_letter(
    warehouse: Warehouse,
) -> None:
    gate = Rejecting(warehouse, b"poisoned")
    sink = WarehouseSink(gate)
    writes = Writes()
    early = EventRows(sink, writes.events, every=10)
    for n in range(25):
        properties = {"note": "poisoned"} if n == 13 else {}
        writes.events.append(event(f"m{n}", properties=properties))
        early.poll()
        await asyncio.sleep(0)  # the worker yields as it goes: an insert in flight gets to run
    assert 10 <= early.sent < 25, "rows were handed over before the batch ended, and not all of them"

    written, letters = await sink.write(writes, early)

    assert written == {"events": 24}
    assert [letter.id.startswith("sink:events:") and b'"m13"' in bytes(letter.payload) for letter in letters] == [True]
    assert sum(gate.inserts) == 24
    assert len(gate.inserts) >= 3, "the early slice, bisected around the bad row, and the rest"
    landed = warehouse.execute("SELECT message_id FROM events ORDER BY toUInt32(substring(message_id, 2))", "TSV")
    assert landed.decode().split() == [f"m{n}" for n in range(25) if n != 13]


async def test_a_failed_batch_waits_for_its_insert_in_flight_and_takes_no_error_from_it(warehouse: Warehouse) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    class Slow(WarehouseSink):
        async def insert(self, table, rows, encode=None):  # type: ignore[no-untyped-def]
            started.set()
            await release.wait()
            raise RuntimeError("the connection broke")

    writes = Writes()
    early = EventRows(Slow(warehouse), writes.events, every=2)
    writes.events += [event("a"), event("b")]
    early.poll()
    await asyncio.wait_for(started.wait(), 5)
    abandoning = asyncio.create_task(early.abandon())
    await asyncio.sleep(0.2)
    assert not abandoning.done(), "the next try's insert must not overlap this one"
    release.set()
    await asyncio.wait_for(abandoning, 5)  # the batch goes again: this insert's error is not raised
    assert early.task is None
