"""The keyed stage's batch body — ``KeyedStage.start`` and ``settle``, which the worker calls for
every batch (``Worker._keyed``, ``_settle``) — on the real state store, Kafka transactions and
chDB: a crash between the rows and the commit, and an owner that is fenced by a new one while it
holds a batch. Either way the warehouse ends on the result of an undisturbed run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.batch import stores_on
from pipeline.canonical import CanonicalEvent
from pipeline.items import encoder as routed_encoder
from pipeline.keyed import Fencing, KeyedStage, Outcome, Record
from pipeline.processor import Processor
from pipeline.records import by_partition
from pipeline.rows import Writes
from pipeline.sink import EventRows, WarehouseSink
from pipeline.statestore import StateStore
from pipeline.warehouse import Warehouse
from sluice.envelope import DeadLetter, RawBatch, body_digest, encoder
from sluice.routing import partition_of, unit_route
from sluice.settings import Settings
from tests.builders import solute_event
from tests.test_processor import event, exposure

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

TOTALS = (
    "SELECT (SELECT count() FROM events FINAL) AS events, (SELECT sum(exposures) FROM exposures_1m) AS exposures, "
    "(SELECT sum(units) FROM exposures_1m) AS units, (SELECT sum(tracks) FROM tracks_1m) AS tracks, "
    "(SELECT sum(value_sum) FROM tracks_1m) AS value, (SELECT count() FROM experiment_units FINAL) AS unit_rows"
)


def records(events: list[CanonicalEvent], topic: str, partitions: int, first_offset: int = 0) -> list[Record]:
    """One keyed record per event and partition, with offsets as a topic would give them."""
    out, offsets = [], {p: first_offset for p in range(partitions)}
    for e in events:
        for partition, items in by_partition([e], partitions).items():
            out.append((topic, partition, offsets[partition], routed_encoder.encode(items)))
            offsets[partition] += 1
    return out


def scripted() -> list[CanonicalEvent]:
    out = []
    for n in range(60):
        out.append(exposure(f"x{n}", f"u{n}", "exp", "A" if n % 2 else "B"))
        if n % 3 == 0:
            out.append(event(f"t{n}", unit=f"u{n}", event="buy", properties={"value": 2}))
    return out + out[::5]  # and duplicates


class StallingSink(WarehouseSink):
    """The real sink; once ``stall`` is called, a batch stops after its rows are written, before
    its commit — where an owner paused, or cut off from Kafka, would stop — until ``go``."""

    def __init__(self, warehouse: Warehouse) -> None:
        super().__init__(warehouse)
        self.passing = asyncio.Event()
        self.passing.set()
        self.stalled = asyncio.Event()
        """Set once a batch waits."""

    def stall(self) -> None:
        self.passing.clear()

    def go(self) -> None:
        self.passing.set()

    async def write(self, writes: Writes, early: EventRows | None = None) -> tuple[dict[str, int], list[DeadLetter]]:
        written = await super().write(writes, early)
        if not self.passing.is_set():
            self.stalled.set()
            await self.passing.wait()
        return written


def stage(settings: Settings, path: Path, warehouse: Warehouse, letters: list[DeadLetter],
          sink: WarehouseSink | None = None) -> KeyedStage:  # fmt: skip
    state = StateStore(path, settings.state_topic, settings.kafka_bootstrap)
    processor = Processor(stores_on(state, lambda cap: None), settings.keyed_topic)

    async def send(batch: list[DeadLetter]) -> None:
        letters.extend(batch)

    fencing = Fencing(settings.kafka_bootstrap, settings.worker_group)
    return KeyedStage(state, processor, sink or WarehouseSink(warehouse), fencing, settings.keyed_topic, send,
                      settings.raw_topic, settings.raw_partitions)  # fmt: skip


async def run(keyed: KeyedStage, records: list[Record]) -> Outcome:
    """One batch, as the worker takes it: decoded, started, settled."""
    return await keyed.settle(await keyed.start(records, await keyed.prepare(records)))


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
    batch = records(scripted(), kafka_settings.keyed_topic, partitions)
    first_half = [r for r in batch if r[2] < 10]
    second_half = [r for r in batch if r[2] >= 10]
    letters: list[DeadLetter] = []

    old_sink = StallingSink(warehouse)
    old = stage(kafka_settings, tmp_path / "old", warehouse, letters, old_sink)
    await own(old, partitions)
    # a rebalance may reset the consumer's position mid-fetch: the same records come twice
    _, lost = await run(old, first_half + first_half)
    assert lost == {}

    # The old owner stalls holding the second half: it processes it and writes its rows...
    old_sink.stall()
    stalled = await old.start(second_half, await old.prepare(second_half))
    await asyncio.wait_for(old_sink.stalled.wait(), 60)
    # ... meanwhile a new owner is assigned its partitions: it fences the old one and redoes the batch
    new = stage(kafka_settings, tmp_path / "new", warehouse, letters)
    await own(new, partitions)
    assert (await committed(kafka_settings, partitions)) == {
        p: max(o for _, q, o, _ in first_half if q == p) + 1 for p in range(partitions)
    }
    _, lost = await run(new, second_half)
    assert lost == {}
    # the old owner comes back and goes on to its commit: fenced, dropped
    old_sink.go()
    _, lost = await old.settle(stalled)
    assert lost == dict.fromkeys(range(partitions), True)
    assert old.state.pending == {} and not old.fencing.producers

    # a crash after the rows of a batch, before its commit: the replay (a third owner) redoes it
    extra = records([exposure("late", "u-late", "exp", "A"), event("tl", unit="u-late", event="buy",
                                                                    properties={"value": 5})],
                    kafka_settings.keyed_topic, partitions, first_offset=1000)  # fmt: skip
    crashed_sink = StallingSink(warehouse)
    crashed_sink.stall()
    crashed = stage(kafka_settings, tmp_path / "crashed", warehouse, letters, crashed_sink)
    await own(crashed, partitions)
    dying = await crashed.start(extra, await crashed.prepare(extra))
    await asyncio.wait_for(crashed_sink.stalled.wait(), 60)
    await dying.cancel()  # ... and the process dies here, its rows written
    replay = stage(kafka_settings, tmp_path / "replay", warehouse, letters)
    await own(replay, partitions)
    _, lost = await run(replay, extra)
    assert lost == {}

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


def raw_batch(*events: dict[str, Any], digest: bytes) -> RawBatch:
    return RawBatch(
        family="solute", route="/api/events", org_id="acme", project_id="web", env="production",
        received_at=T_RECEIVED, body_digest=body_digest(digest),
        events=[msgspec.Raw(msgspec.json.encode(e)) for e in events], indexes=list(range(len(events))),
    )  # fmt: skip


T_RECEIVED = datetime(2026, 5, 21, 10, 31, tzinfo=UTC).timestamp()


def track(message_id: str, user: str, minute: int) -> dict[str, Any]:
    return solute_event(messageId=message_id, userId=user, timestamp=f"2026-05-21T10:{minute:02d}:00Z",
                        properties={"value": 1})  # fmt: skip


async def keyed_topic_records(settings: Settings, partitions: int) -> list[Record]:
    """Every committed record of the keyed topic (aborted transactions' records are not)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed",
                                auto_offset_reset="earliest")  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(settings.keyed_topic, p) for p in range(partitions)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        out: list[Record] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                out += [(tp.topic, tp.partition, m.offset, m.value) for m in messages if m.offset < end[tp]]
        return out
    finally:
        await consumer.stop()


async def test_raw_batches_take_one_hop_and_a_fenced_owner_forwards_nothing(
    kafka_settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    partitions = kafka_settings.raw_partitions
    batches = [
        raw_batch(track("a1", "alice", 1), track("a2", "alice", 2), track("a3", "alice", 3), digest=b"1"),
        # a record of several units, as a gateway that counts partitions differently would write
        # (the gateway splits by unit): carol's event and the copy of a2 live in another
        # partition than bob's here, are forwarded, and the copy is a duplicate there
        raw_batch(track("b1", "bob", 4), track("c1", "carol", 5), track("a2", "alice", 2), digest=b"2"),
        raw_batch(solute_event(type="identify", messageId="i1", userId="alice", event=None, properties=None,
                               traits={"plan": "pro"}, timestamp="2026-05-21T10:06:00Z"), digest=b"3"),
    ]  # fmt: skip
    offsets: dict[int, int] = {}
    raw: list[Record] = []
    for b in batches:
        partition = partition_of(unit_route("acme", msgspec.json.decode(b.events[0])["userId"]), partitions)
        raw.append((kafka_settings.raw_topic, partition, offsets.setdefault(partition, 0), encoder.encode(b)))
        offsets[partition] += 1
    letters: list[DeadLetter] = []

    # an owner processes the raw batches and writes their rows, then stalls before its commit...
    old_sink = StallingSink(warehouse)
    old_sink.stall()
    old = stage(kafka_settings, tmp_path / "old", warehouse, letters, old_sink)
    await own(old, partitions)
    stalled = await old.start(raw, await old.prepare(raw))
    await asyncio.wait_for(old_sink.stalled.wait(), 60)
    forwards = sum(len(f) for f in stalled.writes.forward.values())
    assert forwards >= 2  # alice's user items, carol's event, the copy of a2…
    # ... a new owner fences it and does the batch; the old one's commit (and forwards) are dropped
    new = stage(kafka_settings, tmp_path / "new", warehouse, letters)
    await own(new, partitions)
    _, lost = await run(new, raw)
    assert lost == {}
    old_sink.go()
    _, lost = await old.settle(stalled)
    assert lost == {p: True for p in offsets}
    forwarded = await keyed_topic_records(kafka_settings, partitions)
    assert len(forwarded) == forwards  # the new owner's alone
    _, lost = await run(new, forwarded)
    assert lost == {}

    events = warehouse.execute("SELECT message_id, user_id FROM events FINAL ORDER BY message_id", "TSV").decode()
    assert events.split() == ["a1", "alice", "a2", "alice", "a3", "alice", "b1", "bob", "c1", "carol", "i1", "alice"]
    assert totals(warehouse)["tracks"] == 5
    users = warehouse.execute(
        "SELECT user_id, toMinute(first_seen), toMinute(last_seen), traits FROM users FINAL ORDER BY user_id", "TSV"
    )  # fmt: skip
    assert users.decode().splitlines() == ['alice\t1\t6\t{"plan":"pro"}', "bob\t4\t4\t{}", "carol\t5\t5\t{}"]
    assert letters == []
    for keyed in (old, new):
        await keyed.fencing.close()
        await keyed.state.stop()
