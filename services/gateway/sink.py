"""Where the gateway puts accepted records: Kafka topics, behind a small protocol.

``send_all`` returns only once every record is durable (Kafka: acknowledged by all in-sync
replicas, idempotent producer) and raises :class:`SinkUnavailable` when that cannot be had within
the timeout; the gateway turns that into a 503 with Retry-After. A timed-out record may still land
later: the client retries, and the worker's dedupe by message id absorbs the second copy.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from sluice.envelope import RAW_RECORD_BYTES
from sluice.kafkaconf import durable_producer
from sluice.routing import partition_of

Record = tuple[str, bytes | None, bytes]
"""(topic, key, value)"""


class SinkUnavailable(Exception):
    """Kafka did not acknowledge in time (down, slow, or not connected yet)."""


class RecordSink(Protocol):
    async def send_all(self, records: list[Record]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class KafkaSink:
    def __init__(
        self, bootstrap: str, timeout: float, compression: str | None = None, security: Mapping[str, Any] | None = None
    ) -> None:
        self.timeout = timeout
        self.bootstrap = bootstrap
        self.compression = compression or None
        self.security = security or {}

    async def start(self) -> None:
        # aiokafka objects belong to the running loop, so they are made here, not in __init__.
        self._producer = durable_producer(
            self.bootstrap, self.security, linger_ms=2, compression_type=self.compression,
            max_request_size=RAW_RECORD_BYTES, request_timeout_ms=int(self.timeout * 1000), partitioner=by_key,
        )  # fmt: skip
        try:
            await self._producer.start()
        except BaseException:  # refused (credentials) or unreachable: leave nothing open
            await self._producer.stop()
            raise

    async def stop(self) -> None:
        await self._producer.stop()

    async def send_all(self, records: list[Record]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                deliveries = [await self._producer.send(t, v, key=k) for t, k, v in records]
                await asyncio.gather(*deliveries)
        except (TimeoutError, KafkaError) as exc:
            raise SinkUnavailable(f"{type(exc).__name__}: {exc}") from exc


def by_key(key: bytes | None, partitions: list[int], available: list[int]) -> int:
    """``crc32(key) mod partitions`` (``sluice.routing.partition_of``: the worker routes state
    the same way), any available partition for a record without a key."""
    if key is None:
        return random.choice(available or partitions)
    return partitions[partition_of(key, len(partitions))]
