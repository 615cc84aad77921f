"""The registry's Kafka side: writing its records (:func:`write_records`), following the topic into
a :class:`sluice.registry.Registry` (:class:`RegistryFollower`, what every gateway runs), and a
one-off snapshot (:func:`read_registry`, for the commands)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from sluice.kafkaconf import durable_producer
from sluice.registry import Registry
from sluice.topics import topic_partitions

log = logging.getLogger("sluice.registry")


async def write_records(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes | None]],
    security: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    """Write records in order, each acknowledged by Kafka; a None value is a tombstone."""
    producer = durable_producer(bootstrap, security)
    try:
        await producer.start()
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


class RegistryFollower:
    """Tails the registry topic from the beginning into a :class:`Registry`.

    ``ready`` is set once everything that was in the topic at start has been read, so a
    gateway never answers 401 for a key that existed before it started. It never stops on a
    record: one that does not decode is skipped, logged (its key and offset, never its value) and
    counted in ``skipped``. :meth:`healthy` says whether it is still following: its task runs and
    it has read, within ``stale_after`` seconds, everything that was in the topic a check earlier
    (so a follower that cannot fetch, and would miss revocations, takes its gateway out of service).
    """

    CHECK_SECONDS = 5.0

    def __init__(
        self, bootstrap: str, topic: str, registry: Registry | None = None, stale_after: float = 30.0,
        security: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.registry = registry or Registry()
        self.ready = asyncio.Event()
        self.skipped = 0
        self.lag = 0
        self.stale_after = stale_after
        self.caught_up_at = time.monotonic()
        self._topic = topic
        self._bootstrap = bootstrap
        self._security = security or {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partitions = await topic_partitions(self._bootstrap, self._topic, self._security)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, enable_auto_commit=False, fetch_max_wait_ms=200, **self._security
        )
        tps = [TopicPartition(self._topic, p) for p in partitions]
        try:
            await self._consumer.start()
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            self._end = self._target = await self._consumer.end_offsets(tps)
        except BaseException:  # refused or unreachable: leave nothing open
            await self._consumer.stop()
            raise
        self._task = asyncio.create_task(self._follow(tps))

    def healthy(self) -> bool:
        running = self._task is not None and not self._task.done()
        fresh = time.monotonic() - self.caught_up_at < self.stale_after
        return self.ready.is_set() and running and fresh

    async def _follow(self, tps: list[TopicPartition]) -> None:
        checked = 0.0
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        self._apply(message.key, message.value, message.offset)
                if not self.ready.is_set() and await self._reached(tps, self._end):
                    self.ready.set()
                if time.monotonic() - checked >= self.CHECK_SECONDS:
                    checked = time.monotonic()
                    await self._check_lag(tps)
            except KafkaError as exc:  # keep the keys we have; the consumer reconnects
                log.warning("registry fetch failed: %s", exc)
                await asyncio.sleep(1)
            except Exception:  # never die: a dead follower would silently stop revocations
                log.exception("registry follower error")
                await asyncio.sleep(1)

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            return
        try:
            self.registry.apply(key, value)
        except Exception as exc:  # msgspec's decode and validation errors, bad UTF-8, anything else
            self.skipped += 1
            log.error("registry record skipped at offset %d (key %r): %s", offset, key[:80], type(exc).__name__)

    async def _reached(self, tps: list[TopicPartition], offsets: dict[TopicPartition, int]) -> bool:
        return all([await self._consumer.position(tp) >= offsets[tp] for tp in tps])

    async def _check_lag(self, tps: list[TopicPartition]) -> None:
        """Caught up when everything that was in the topic at the previous check has been read."""
        end = await self._consumer.end_offsets(tps)
        if await self._reached(tps, self._target):
            self.caught_up_at = time.monotonic()
        positions = [await self._consumer.position(tp) for tp in tps]
        self.lag = sum(max(0, end[tp] - pos) for tp, pos in zip(tps, positions, strict=True))
        self._target = end

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def read_registry(
    bootstrap: str, topic: str, wait: float = 10.0, registry: Registry | None = None,
    security: Mapping[str, Any] | None = None,
) -> Registry:  # fmt: skip
    """A one-off snapshot of the registry (for ``keys list``)."""
    follower = RegistryFollower(bootstrap, topic, registry, security=security)
    await follower.start()
    try:
        await asyncio.wait_for(follower.ready.wait(), wait)
    finally:
        await follower.stop()
    return follower.registry
