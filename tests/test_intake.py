"""How the worker takes its steps' records (``pipeline.intake.Intake``) from a real consumer: a
backlog in full and at once, a live load once per period, nothing after a period.

Time is measured only from below (a step waits at least its period: a busy machine makes that
longer, never shorter); "at once" is checked by what the intake asked the consumer for (no wait),
and order by events, not by sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.intake import Intake
from pipeline.items import Routed
from pipeline.items import encoder as routed_encoder
from pipeline.keyed import InFlight
from pipeline.rows import Writes
from pipeline.warehouse import Warehouse
from pipeline.worker import Tail, Worker
from sluice.envelope import encoder
from sluice.routing import partition_of, unit_route
from sluice.settings import Settings
from tests.builders import solute_event
from tests.test_normalize import family_batch
from tests.test_processor import event
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka

PERIOD = 1.0


@pytest.fixture
async def clients(kafka_settings: Settings) -> AsyncIterator[tuple[AIOKafkaProducer, AIOKafkaConsumer]]:
    """A producer to the raw topic and a consumer of all its partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_settings.kafka_bootstrap, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    consumer.assign([TopicPartition(kafka_settings.raw_topic, p) for p in range(kafka_settings.raw_partitions)])
    yield producer, consumer
    await consumer.stop()
    await producer.stop()


async def test_a_backlog_is_taken_in_full_and_a_live_load_once_per_period(
    kafka_settings: Settings, clients: tuple[AIOKafkaProducer, AIOKafkaConsumer]
) -> None:
    settings, (producer, consumer) = kafka_settings, clients
    intake = Intake(consumer, rows=10_000, period=PERIOD, stopping=asyncio.Event())
    for n in range(300):
        await producer.send(settings.raw_topic, b"backlog %d" % n, partition=n % settings.raw_partitions)
    await producer.flush()
    taken = 0

    async def all_taken() -> bool:  # a consumer's first fetches may come before it has found the records
        nonlocal taken
        taken += sum(len(m) for m in (await intake.take()).values())
        return taken >= 300

    await wait_until(all_taken, 60, "the backlog taken", every=0)
    assert taken == 300

    async def live(seconds: float) -> int:
        sent = 0
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            await producer.send_and_wait(settings.raw_topic, b"live", partition=sent % settings.raw_partitions)
            sent += 1
            await asyncio.sleep(0.02)
        return sent

    load = asyncio.create_task(live(4 * PERIOD))
    await intake.take()
    steps = []
    while not load.done():
        started = time.monotonic()
        records = await intake.take()
        steps.append((time.monotonic() - started, sum(len(m) for m in records.values())))
    await load
    # under a live load a step waits out the period from the last, gathering what comes
    full = steps[:-1]
    assert full and all(seconds >= 0.8 * PERIOD for seconds, _ in full), steps
    assert all(count >= 2 for _, count in full), steps


async def test_a_step_over_its_period_takes_what_is_there_at_once_and_nothing_waits_a_period(
    kafka_settings: Settings, clients: tuple[AIOKafkaProducer, AIOKafkaConsumer]
) -> None:
    settings, (producer, consumer) = kafka_settings, clients
    intake = Intake(consumer, rows=10_000, period=PERIOD, stopping=asyncio.Event())
    started = time.monotonic()
    assert await intake.take() == {}
    assert time.monotonic() - started >= 0.8 * PERIOD  # idle: one period, then an empty step
    for n in range(200):
        await producer.send(settings.raw_topic, b"x", partition=n % settings.raw_partitions)
    await producer.flush()
    intake.taken_at -= PERIOD  # the last step ran longer than its period
    asked: list[tuple[int, int]] = []
    getmany = consumer.getmany

    async def watched(*partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        fetched = await getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        asked.append((timeout_ms, sum(len(m) for m in fetched.values())))
        return fetched

    consumer.getmany = watched
    records = await intake.take()
    assert sum(len(m) for m in records.values()) > 0
    # it waited for the first records only (they may not have been fetched yet), then not at all
    first = next(n for n, (_, count) in enumerate(asked) if count)
    assert all(timeout == 0 for timeout, _ in asked[first + 1 :]) and len(asked) > first + 1, asked


@pytest.mark.clickhouse
async def test_a_failed_commit_lets_its_partitions_go_and_its_next_records_wait(
    settings: Settings, warehouse: Warehouse
) -> None:
    """A batch's write and commit run beside the next batch (``Worker._keyed``). When they fail —
    even after Kafka took a partition's transaction — the batch's partitions are let go and
    fetched again from the batch's first records; their records already in hand follow those
    and are not processed now (``_own`` checks the committed offset before any is)."""
    worker = Worker(settings, warehouse)
    sought: list[tuple[TopicPartition, int]] = []
    worker._seek = lambda tp, offset: sought.append((tp, offset))  # type: ignore[method-assign]
    raw0, keyed0, raw1 = (TopicPartition(settings.raw_topic, 0), TopicPartition(settings.keyed_topic, 0),
                          TopicPartition(settings.raw_topic, 1))  # fmt: skip
    letters = TopicPartition(settings.dlq_topic, 0)

    async def conclude() -> tuple[dict[str, int], dict[int, bool]]:
        raise OSError("the state store's disk is full")

    writes, early = worker.keyed.begin()
    worker.owned = {0, 1}
    worker.tail = Tail(InFlight(writes, early, asyncio.create_task(conclude())), {raw0: [at(10), at(11)]}, 0.0)
    in_hand = {raw0: [at(12)], keyed0: [at(5)], raw1: [at(7)], letters: [at(3)]}
    assert await worker._settled(in_hand) == {raw1: [at(7)], letters: [at(3)]}
    assert worker.owned == {1} and worker.tail is None and worker.retake == {}
    assert set(sought) == {(raw0, 10), (keyed0, 5)}  # never ahead of the failed batch's first record
    for close in (worker.consumer.stop, worker.producer.stop, worker.state.stop):
        await close()


def at(offset: int, value: bytes = b"") -> SimpleNamespace:
    return SimpleNamespace(offset=offset, value=value)


@pytest.mark.clickhouse
async def test_a_batch_is_processed_while_the_one_before_commits_and_drops_what_that_one_lost(
    settings: Settings, warehouse: Warehouse
) -> None:
    """With its partitions owned and positioned, a batch is processed at once, on the state the
    batch before it staged (``Worker._keyed``); it commits after that one. A partition the batch
    before lost is let go in this one too: nothing of it is committed, and what it staged is
    forgotten (its records come again from the failed batch's first)."""
    worker = Worker(settings, warehouse)
    sought: list[tuple[TopicPartition, int]] = []
    worker._seek = lambda tp, offset: sought.append((tp, offset))  # type: ignore[method-assign]
    tps = [TopicPartition(topic, p) for topic in (settings.raw_topic, settings.keyed_topic) for p in (0, 1)]
    worker.consumer.assignment = lambda: set(tps)
    worker.owned, worker.positioned, worker.state.ready = {0, 1}, set(tps), {0, 1}
    raw0, raw1 = tps[0], tps[1]
    unit = {p: next(f"u{n}" for n in range(1000) if partition_of(unit_route("acme", f"u{n}"), settings.raw_partitions)
                    == p) for p in (0, 1)}  # fmt: skip

    def raw(*message_ids: str, partition: int) -> bytes:
        events = [solute_event(messageId=m, userId=unit[partition]) for m in message_ids]
        return encoder.encode(family_batch("solute", "/api/events", *events))

    # batch N, processed and staged, its commit in flight: it will lose partition 0
    before, early = worker.keyed.begin()
    await worker.keyed.process([(settings.raw_topic, 0, 10, raw("m0", partition=0)),
                                (settings.raw_topic, 1, 6, raw("m1", partition=1))], before, early)  # fmt: skip

    processed = asyncio.Event()

    async def commit_losing_0() -> tuple[dict[str, int], dict[int, bool]]:
        await processed.wait()  # in flight until batch N+1 has been processed
        return {}, {0: False}

    batch = InFlight(before, early, asyncio.create_task(commit_losing_0()))
    worker.tail = Tail(batch, {raw0: [at(10)], raw1: [at(6)]}, 0.0)
    concluded: list[Writes] = []

    async def conclude(writes: Writes, early: object) -> tuple[dict[str, int], dict[int, bool]]:
        concluded.append(writes)
        return {}, {}

    worker.keyed.conclude = conclude  # type: ignore[method-assign]
    process = worker.keyed.process
    in_flight: list[bool] = []

    async def watched(*args: Any, **kwargs: Any) -> Writes:
        in_flight.append(worker.tail is not None and not worker.tail.done)
        try:
            return await process(*args, **kwargs)
        finally:
            processed.set()

    worker.keyed.process = watched  # type: ignore[method-assign]
    # batch N+1: copies of m0 and m1 (duplicates only on the state N staged), new events, and a
    # keyed record of partition 0, which N did not have
    keyed0 = tps[2]
    forwarded = routed_encoder.encode([Routed("user", event("k0", "identify", user_id="someone"))])
    next_batch = {raw0: [at(11, raw("m0", "n0", partition=0))], keyed0: [at(5, forwarded)],
                  raw1: [at(7, raw("m1", "n1", partition=1))]}  # fmt: skip
    await asyncio.wait_for(worker._keyed(next_batch), 30)  # N's commit waits for N+1's processing: no deadlock
    assert in_flight == [True]  # processed while N committed
    assert worker.tail is not None and worker.tail.batch is not batch
    await worker.tail.batch.task  # its own commit
    [after] = concluded
    assert after.duplicates == {"solute": 2}  # N's staged state was read
    assert set(after.last_offset) == {(settings.raw_topic, 1)}
    assert set(after.staged) == {1} and after.staged[1] and 0 not in after.forward
    assert worker.retake == {} and 0 not in worker.owned
    assert (raw0, 10) in sought and (keyed0, 5) in sought  # all of 0 comes again, from N's first
    [layer] = worker.keyed.processor._seen.layers  # N+1's: N's was released when N settled
    assert layer and all(held[1] == 1 for held in layer.values())  # nothing of 0 staged any more
    assert worker.tail is not None and set(worker.tail.records) == {raw1}
    await worker._settle()
    assert not worker.keyed.processor._seen.layers  # released with the commit
    for close in (worker.consumer.stop, worker.producer.stop, worker.state.stop):
        await close()
