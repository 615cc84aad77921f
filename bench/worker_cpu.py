"""The worker's own CPU per event, without Kafka or the warehouse: normalize, route, dedupe,
state, attribution, rollups, rows — the keyed stage's batch body as the worker runs it
(``KeyedStage.prepare``, then ``process``, which ``KeyedStage.start`` runs for every batch) on a
real RocksDB state store, fed raw records made by the gateway in-process from the load
generator's mix (5 % duplicates), then the keyed records they forward (users and companies).
Writing and committing (``KeyedStage.conclude``) are replaced by encoding the rows and applying
the staged state locally.

Usage: ``python bench/worker_cpu.py [REQUESTS] [--profile] [--identified USERS]`` (default 2,000
requests of 100 events; ``--identified``: identified users' Solute tracks instead of the mix).
Prints records, events, seconds and µs per event; ``--profile`` adds cProfile's top.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import msgspec  # noqa: E402
from inprocess import gateway  # noqa: E402

from commands.loadgen import Generator, Options, _headers  # noqa: E402
from pipeline.batch import stores_on  # noqa: E402
from pipeline.canonical import to_rows  # noqa: E402
from pipeline.keyed import KeyedStage, Record  # noqa: E402
from pipeline.process import GC_THRESHOLD  # noqa: E402
from pipeline.processor import Processor  # noqa: E402
from pipeline.statestore import StateStore  # noqa: E402
from services.gateway.sink import by_key  # noqa: E402
from sluice.settings import Settings  # noqa: E402

STEP = 400
"""Raw records per batch (about what a step of the worker takes)."""


async def raw_records(requests: int, identified_users: int = 0) -> tuple[list[Record], Settings]:
    """The raw topic's records for ``requests`` requests, with the partitions the gateway chose."""
    async with gateway() as gw:
        key = gw.key
        generator = Generator(Options(url="", key=key, org="acme", batch_size=100, rate=0.0, duration=0,
                                      connections=1, seed=7, progress=False, duplicate_rate=0.05,
                                      identified_users=identified_users))  # fmt: skip
        for _ in range(requests):
            family, path, body, _ids = generator.request()
            await gw.post(path, body, **_headers(family, key))
        settings = gw.gateway.settings
        partitions = list(range(settings.raw_partitions))
        offsets: dict[int, int] = {}
        out: list[Record] = []
        for topic, key_bytes, value in gw.sink.records:
            if topic == settings.raw_topic:
                partition = by_key(key_bytes, partitions, partitions)
                out.append((topic, partition, offsets.setdefault(partition, 0), value))
                offsets[partition] += 1
        return out, settings


async def main(requests: int, profile: bool, identified_users: int = 0) -> None:
    records, settings = await raw_records(requests, identified_users)
    gc.set_threshold(*GC_THRESHOLD)  # as a worker process has it
    events = sum(len(msgspec.json.decode(value)["events"]) for *_, value in records)
    raw = len(records)
    state = StateStore(Path(tempfile.mkdtemp()) / "state", settings.state_topic, settings.kafka_bootstrap)
    state.ready = set(range(settings.raw_partitions))
    processor = Processor(stores_on(state, lambda cap: None), settings.keyed_topic, raw_topic=settings.raw_topic)
    stage = KeyedStage(state, processor, None, None, settings.keyed_topic, None, settings.raw_topic,  # type: ignore[arg-type]
                       settings.raw_partitions)  # fmt: skip
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    keyed_offsets: dict[int, int] = {}
    position = 0
    while position < len(records):  # the raw records, and the keyed records they forward, in turn
        if profiler:
            profiler.enable()
        step = records[position : position + STEP]
        position += STEP
        writes = await stage.process(step, prepared=await stage.prepare(step))
        for destination, value in (item for forwarded in writes.forward.values() for item in forwarded):
            offset = keyed_offsets[destination] = keyed_offsets.get(destination, -1) + 1
            records.append((settings.keyed_topic, destination, offset, value))
        to_rows(writes.events)
        for _, rows in writes.tables():
            msgspec.json.encode(rows)
        for items in writes.staged.values():  # what a commit applies locally
            state.apply(items, {})
        processor.release(writes)
        if profiler:
            profiler.disable()
    seconds = time.perf_counter() - started
    print(f"{raw:,} raw records and {len(records) - raw:,} keyed, {events:,} events: {seconds:.2f} s, "
          f"{events / seconds:,.0f} events/s, {1e6 * seconds / events:.1f} µs per event")  # fmt: skip
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    users = int(sys.argv[sys.argv.index("--identified") + 1]) if "--identified" in sys.argv else 0
    numbers = [int(a) for a in sys.argv[1:] if a.isdigit() and a != str(users)]
    asyncio.run(main(numbers[0] if numbers else 2000, "--profile" in sys.argv, users))
