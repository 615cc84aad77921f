"""The topics Sluice owns, created idempotently by whichever process starts first."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from sluice.envelope import RAW_RECORD_BYTES
from sluice.kafkaconf import kafka_security
from sluice.retry import Backoff, retrying
from sluice.settings import Settings


def topic_specs(settings: Settings) -> list[NewTopic]:
    return [
        NewTopic(
            settings.raw_topic, settings.raw_partitions, 1, topic_configs={"max.message.bytes": str(RAW_RECORD_BYTES)}
        ),
        NewTopic(settings.keyed_topic, settings.raw_partitions, 1),
        NewTopic(
            settings.registry_topic, 1, 1,
            topic_configs={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
        ),
        NewTopic(
            settings.state_topic, settings.raw_partitions, 1,
            topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(RAW_RECORD_BYTES)},
        ),
        NewTopic(settings.dlq_topic, 1, 1, topic_configs={"retention.ms": str(30 * 86400_000)}),
    ]  # fmt: skip


async def ensure_topics(settings: Settings, wait: float = 30.0) -> None:
    """Create missing topics; waits up to ``wait`` seconds for the broker to be reachable."""

    async def connected() -> AIOKafkaAdminClient:
        admin = _admin(settings.kafka_bootstrap, kafka_security(settings))
        try:
            await admin.start()
        except KafkaConnectionError:
            await admin.close()
            raise
        return admin

    admin = await retrying("connecting to Kafka", connected, (KafkaConnectionError,), Backoff(0.25, 2.0), within=wait)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_specs(settings) if t.name not in existing]
        if missing:
            # another process may win the race; the topic is there either way. A component that
            # may not create topics (a secured cluster: the operator declares them) goes on.
            with contextlib.suppress(TopicAlreadyExistsError, TopicAuthorizationFailedError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> None:
    """Remove this prefix's topics (tests clean up after themselves)."""
    admin = _admin(settings.kafka_bootstrap, kafka_security(settings))
    await admin.start()
    try:
        prefix = settings.topic_prefix
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def _admin(bootstrap: str, security: Mapping[str, Any]) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)


async def topic_partitions(bootstrap: str, topic: str, security: Mapping[str, Any] | None = None) -> list[int]:
    """The partition numbers of an existing topic (raises if it does not exist)."""
    admin = _admin(bootstrap, security or {})
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if description["error_code"] != 0:
        raise RuntimeError(f"topic {topic} is not available (error {description['error_code']})")
    return sorted(p["partition"] for p in description["partitions"])
