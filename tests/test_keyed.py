"""The keyed stage's batch body — ``KeyedStage.run``, what the worker runs — on the real state
store, Kafka transactions and chDB: a crash between the rows and the commit, and an owner that
is fenced by a new one while it holds a batch. Either way the warehouse ends on the result of an
undisturbed run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.canonical import CanonicalEvent
from pipeline.keyed import Fencing, KeyedStage, stores_on
from pipeline.processor import Processor
from pipeline.records import by_partition
from pipeline.records import encoder as routed_encoder
from pipeline.sink import WarehouseSink
from pipeline.statestore import StateStore
from pipeline.warehouse import Warehouse
from sluice.envelope import DeadLetter
from sluice.settings import Settings
from tests.test_processor import event, exposure

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

TOTALS = (
    "SELECT (SELECT count() FROM events FINAL) AS events, (SELECT sum(exposures) FROM exposures_1m) AS exposures, "
    "(SELECT sum(units) FROM exposures_1m) AS units, (SELECT sum(tracks) FROM tracks_1m) AS tracks, "
    "(SELECT sum(value_sum) FROM tracks_1m) AS value, (SELECT count() FROM experiment_units FINAL) AS unit_rows"
)


def records(events: list[CanonicalEvent], partitions: int, first_offset: int = 0) -> list[tuple[int, int, bytes]]:
    """One keyed record per event and partition, with offsets as a topic would give them."""
    out, offsets = [], {p: first_offset for p in range(partitions)}
    for e in events:
        for partition, items in by_partition([e], partitions).items():
            out.append((partition, offsets[partition], routed_encoder.encode(items)))
            offsets[partition] += 1
    return out


def scripted() -> list[CanonicalEvent]:
    out = []
    for n in range(60):
        out.append(exposure(f"x{n}", f"u{n}", "exp", "A" if n % 2 else "B"))
        if n % 3 == 0:
            out.append(event(f"t{n}", unit=f"u{n}", event="buy", properties={"value": 2}))
    return out + out[::5]  # and duplicates


def stage(settings: Settings, path: Path, warehouse: Warehouse, letters: list[DeadLetter]) -> KeyedStage:
    state = StateStore(path, settings.state_topic, settings.kafka_bootstrap)
    processor = Processor(stores_on(state, lambda cap: None), settings.keyed_topic)

    async def send(batch: list[DeadLetter]) -> None:
        letters.extend(batch)

    fencing = Fencing(settings.kafka_bootstrap, settings.worker_group)
    return KeyedStage(state, processor, WarehouseSink(warehouse), fencing, settings.keyed_topic, send)


async def own(keyed: KeyedStage, partitions: int) -> None:
    """What the worker does on assignment: fence, then catch the state up."""
    for partition in range(partitions):
        await keyed.fencing.acquire(partition)
    await keyed.state.recover(set(range(partitions)))


async def committed(settings: Settings, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=settings.worker_group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(settings.keyed_topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


def totals(warehouse: Warehouse) -> dict[str, Any]:
    [row] = [msgspec.json.decode(line) for line in warehouse.execute(TOTALS, "JSONEachRow").splitlines()]
    return dict(row)


async def test_a_fenced_owner_and_a_crash_before_the_commit_count_nothing_twice(
    kafka_settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    partitions = kafka_settings.raw_partitions
    batch = records(scripted(), partitions)
    first_half = [r for r in batch if r[1] < 10]
    second_half = [r for r in batch if r[1] >= 10]
    letters: list[DeadLetter] = []

    old = stage(kafka_settings, tmp_path / "old", warehouse, letters)
    await own(old, partitions)
    # a rebalance may reset the consumer's position mid-fetch: the same records come twice
    _, _, lost = await old.run(first_half + first_half)
    assert lost == {}

    # The old owner stalls holding the second half: it processes it and writes its rows...
    writes = old.process(second_half)
    await old.write(writes)
    # ... meanwhile a new owner is assigned its partitions: it fences the old one and redoes the batch
    new = stage(kafka_settings, tmp_path / "new", warehouse, letters)
    await own(new, partitions)
    assert (await committed(kafka_settings, partitions)) == {
        p: max(o for q, o, _ in first_half if q == p) + 1 for p in range(partitions)
    }
    _, _, lost = await new.run(second_half)
    assert lost == {}
    # the old owner comes back and tries to commit: fenced, dropped
    assert await old.commit(writes) == dict.fromkeys(range(partitions), True)
    assert old.state.pending == {} and not old.fencing.producers

    # a crash after the rows of a batch, before its commit: the replay (a third owner) redoes it
    extra = records([exposure("late", "u-late", "exp", "A"), event("tl", unit="u-late", event="buy",
                                                                    properties={"value": 5})],
                    partitions, first_offset=1000)  # fmt: skip
    crashed = stage(kafka_settings, tmp_path / "crashed", warehouse, letters)
    await own(crashed, partitions)
    await crashed.write(crashed.process(extra))  # ... and the process dies here
    replay = stage(kafka_settings, tmp_path / "replay", warehouse, letters)
    await own(replay, partitions)
    await replay.run(extra)

    # The undisturbed truth: 60 exposures (30 A, 30 B), 20 purchases of 2, plus the late unit.
    assert totals(warehouse) == {
        "events": 60 + 20 + 2,
        "exposures": 61,
        "units": 61,
        "tracks": 21,
        "value": 45.0,
        "unit_rows": 61,
    }
    assert letters == []
    for keyed in (old, new, crashed, replay):
        await keyed.fencing.close()
        await keyed.state.stop()
