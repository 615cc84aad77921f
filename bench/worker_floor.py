"""The floor under the worker's rate: what one process does per event at the least, with every
feature off, on the same preloaded raw topic as ``bench/worker_rate.py``.

Issue 25 asks one worker process for ≥ 70,000 events/s on identified traffic and ≥ 100,000 on
the mix, everything on. This measures what no design of the worker can skip, in one process on
this machine beside the broker, in three cumulative stages over the whole topic:

1. ``fetch``: consume the raw topic to its end (aiokafka, ``read_committed``, the worker's fetch
   sizes), nothing else;
2. ``normalize``: also decode and normalize every raw batch (``pipeline.batch.decode_raw``, the
   compiled module the worker runs);
3. ``insert``: also encode the events' rows and insert them into an embedded warehouse (chDB,
   the worker's migrated ``events`` table), in inserts of ``EARLY_ROWS`` in a thread beside the
   next records, as the worker's ``EventRows`` does.

No dedupe, no state, no users, no attribution, no rollups, no transactions, no keyed hop. Each
stage reads the topic afresh (its own consumer, no group). Prints one JSON line: events, and per
stage seconds and events/s. Usage: ``python bench/worker_floor.py [--identified 20000]`` (events:
``BENCH_WORKER_EVENTS``, default 1,000,000; the identified phase uses 600,000 as ``make bench`` does).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from harness import bench_settings, fresh_broker  # noqa: E402
from loads import preload  # noqa: E402

from pipeline.batch import decode_raw  # noqa: E402
from pipeline.canonical import to_rows  # noqa: E402
from pipeline.keyed import EARLY_ROWS  # noqa: E402
from pipeline.warehouse import ChdbWarehouse, migrate  # noqa: E402
from sluice.envelope import RAW_RECORD_BYTES  # noqa: E402
from sluice.settings import Settings  # noqa: E402

EVENTS = int(os.environ.get("BENCH_WORKER_EVENTS", "1000000"))
STAGES = ("fetch", "normalize", "insert")


async def stage(settings: Settings, name: str, warehouse: ChdbWarehouse | None) -> tuple[float, int]:
    """Read the raw topic to its end doing ``name``'s work; the seconds it took and the events seen."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed", max_partition_fetch_bytes=RAW_RECORD_BYTES, fetch_max_bytes=32 << 20,
    )  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(settings.raw_topic, p) for p in range(settings.raw_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        left = {tp for tp in tps if end[tp] > 0}
        events, pending, insert = 0, [], None
        started = time.perf_counter()
        while left:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    if name != "fetch":
                        decoded = decode_raw(record.value)
                        events += len(decoded.events)
                        if name == "insert":
                            pending += decoded.events
                    else:
                        events += 1  # records, not events: decoding is the next stage's work
                if records and records[-1].offset + 1 >= end[tp]:
                    left.discard(tp)
            if warehouse is not None and len(pending) >= EARLY_ROWS:
                if insert is not None:
                    await insert
                insert = asyncio.create_task(asyncio.to_thread(warehouse.insert_json, "events", to_rows(pending)))
                pending = []
        if warehouse is not None:
            if insert is not None:
                await insert
            if pending:
                warehouse.insert_json("events", to_rows(pending))
        return time.perf_counter() - started, events
    finally:
        await consumer.stop()


def main(identified_users: int = 0) -> dict[str, object]:
    events = 600_000 if identified_users else EVENTS
    with fresh_broker("sluice-worker-floor-") as (work, broker, _):
        settings = bench_settings(work, broker.bootstrap, "fl.")
        filled = preload(settings, work, events, identified_users)
        warehouse = ChdbWarehouse(work / "chdb", "floor")
        migrate(warehouse)
        result: dict[str, object] = {"events_accepted": filled, "identified_users": identified_users}
        for name in STAGES:
            seconds, seen = asyncio.run(stage(settings, name, warehouse if name == "insert" else None))
            unit = "records" if name == "fetch" else "events"
            result[name] = {unit: seen, "seconds": round(seconds, 2), f"{unit}_per_s": round(seen / seconds)}
        return result


if __name__ == "__main__":
    users = int(sys.argv[sys.argv.index("--identified") + 1]) if "--identified" in sys.argv else 0
    print(json.dumps(main(users)), flush=True)
