"""How the worker takes its steps' records (``pipeline.worker.Intake``) from a real consumer: a
backlog in full and at once, a live load once per period, nothing after a period."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.warehouse import Warehouse
from pipeline.worker import Intake, Tail, Worker
from sluice.settings import Settings

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
    for _ in range(10):  # a consumer's first fetches may come before it has found the records
        taken += sum(len(m) for m in (await intake.take()).values())
        if taken >= 300:
            break
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
    assert all(count >= 10 for _, count in full), steps


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
    await asyncio.sleep(PERIOD)  # the last step ran longer than its period
    started = time.monotonic()
    records = await intake.take()
    assert time.monotonic() - started < 0.5 * PERIOD
    assert sum(len(m) for m in records.values()) > 0


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
    worker.tail = Tail(asyncio.create_task(conclude()), {raw0: [at(10), at(11)]}, writes, early, 0.0)
    in_hand = {raw0: [at(12)], keyed0: [at(5)], raw1: [at(7)], letters: [at(3)]}
    assert await worker._settled(in_hand) == {raw1: [at(7)], letters: [at(3)]}
    assert worker.owned == {1} and worker.tail is None and worker.retake == {}
    assert set(sought) == {(raw0, 10), (keyed0, 5)}  # never ahead of the failed batch's first record
    for close in (worker.consumer.stop, worker.producer.stop, worker.state.stop):
        await close()


def at(offset: int) -> SimpleNamespace:
    return SimpleNamespace(offset=offset, value=b"")
