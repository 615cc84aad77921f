"""What the worker takes from Kafka: its member of the consumer group (``group_consumer``) and a
step's worth of records at a time (``Intake.take``)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from sluice.envelope import RAW_RECORD_BYTES
from sluice.settings import Settings

MAX_TAKE_BYTES = 8 << 20
"""Bytes of records one step takes: a backlog of raw batches (a hundred events each) must not
become one step of a million events (memory, freshness, and the heartbeats: see
``pipeline.keyed.YIELD_EVERY``)."""


class Intake:
    """The consumer's records, a step's worth at a time (``take``)."""

    def __init__(self, consumer: AIOKafkaConsumer, rows: int, period: float, stopping: asyncio.Event) -> None:
        self.consumer = consumer
        self.rows = rows
        """Records a step takes at most (``sink_batch_rows``)."""
        self.period = period
        """Seconds between steps under a live load (``sink_batch_seconds``)."""
        self.stopping = stopping
        self.taken_at = 0.0
        """When the last step's records were taken."""

    async def take(self) -> dict[TopicPartition, list[Any]]:
        """The records for the next step: up to ``rows`` records or ``MAX_TAKE_BYTES``,
        and under a live load what arrives until ``period`` after the last step was
        taken (or at once, if that has passed); with nothing to take, whatever comes within
        ``period``. Batches size themselves: under a backlog a step takes the most it
        may; under a live load steps come at most once per ``period``, so their
        fixed costs — a transaction per partition, an insert per table, the parts ClickHouse
        then merges — stay per period, not per request, and freshness stays within a period of
        the step's own time."""
        now = time.monotonic()
        fill_until = self.taken_at + self.period
        idle_until = now + self.period
        taken: dict[TopicPartition, list[Any]] = defaultdict(list)
        count = size = 0
        while not self.stopping.is_set():
            if count >= self.rows or size >= MAX_TAKE_BYTES:
                break
            until = fill_until if count else idle_until
            wait = max(0.0, until - time.monotonic())
            fetched = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=2000)
            if not fetched and (count or wait == 0):
                break  # the period is over and the consumer holds nothing more: go
            for tp, messages in fetched.items():
                if taken[tp] and messages and messages[0].offset <= taken[tp][-1].offset:
                    # The position moved back (a rebalance reset it to the committed offset): the
                    # records taken so far come again; a batch must never hold a record twice.
                    count -= len(taken[tp])
                    size -= sum(len(m.value or b"") for m in taken[tp])
                    taken[tp] = []
                taken[tp] += messages
                count += len(messages)
                size += sum(len(m.value or b"") for m in messages)
        self.taken_at = time.monotonic()
        return taken


def group_consumer(settings: Settings, security: dict[str, Any]) -> AIOKafkaConsumer:
    """The worker's member of its consumer group (subscribed by ``Worker.run``)."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.worker_group,
        enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
        # A stopped worker's partitions move after this long (the default, 45 s, is an outage).
        session_timeout_ms=10_000, heartbeat_interval_ms=2_000, max_poll_interval_ms=600_000,
        # Raw p and keyed p to one member. One assignor only: aiokafka (0.14) sends a JoinGroup per
        # assignor it is given, the second with changed metadata, and a member that rejoins with
        # changed metadata starts another rebalance: a group of several members can rebalance
        # for minutes without assigning anything.
        partition_assignment_strategy=(RangePartitionAssignor,),
        max_partition_fetch_bytes=RAW_RECORD_BYTES, fetch_max_bytes=32 << 20, **security,
    )  # fmt: skip
