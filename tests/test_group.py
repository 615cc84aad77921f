"""The worker's consumer group on the real broker: members that join together settle on one
assignment quickly, keep it, and hold partition p of the raw and keyed topics together.

The regression: given two assignors, aiokafka 0.14 sends two JoinGroups per rejoin, the second
with changed metadata, so every join cost two rebalances, and members that joined within
milliseconds of each other could rebalance thousands of times a minute, assigning nothing
(``pipeline.intake.group_consumer``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import ConsumerRebalanceListener, TopicPartition

from pipeline.intake import group_consumer
from sluice.settings import Settings
from sluice.topics import delete_topics, ensure_topics
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka

MEMBERS = 4


@pytest.fixture
async def six_partitions(kafka_bootstrap: str, settings: Settings) -> AsyncIterator[Settings]:
    real = Settings.from_env(settings.to_env(), kafka_bootstrap=kafka_bootstrap, raw_partitions=6)
    await ensure_topics(real)
    yield real
    await delete_topics(real)


class Member(ConsumerRebalanceListener):  # type: ignore[misc]
    """One worker's group membership, as the worker configures it."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = group_consumer(settings, {})
        self.consumer.subscribe([settings.raw_topic, settings.keyed_topic, settings.dlq_topic], listener=self)
        self.held: set[TopicPartition] = set()
        self.heartbeats = 0
        """Heartbeats the coordinator accepted (one refused during a rebalance is not counted)."""

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.held = set()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.held = set(assigned)

    async def run(self, stop: asyncio.Event) -> None:
        await self.consumer.start()
        coordinator = self.consumer._coordinator  # aiokafka counts no heartbeats: count them here
        beat = coordinator._do_heartbeat

        async def counted() -> bool:
            accepted = bool(await beat())
            self.heartbeats += accepted
            return accepted

        coordinator._do_heartbeat = counted
        try:
            while not stop.is_set():
                await self.consumer.getmany(timeout_ms=200)
        finally:
            await self.consumer.stop()


def complete(consumers_seen: list[set[TopicPartition]], settings: Settings) -> bool:
    """Whether the members' assignments cover every raw and keyed partition once, raw p and
    keyed p with the same member."""
    topics = (settings.raw_topic, settings.keyed_topic)
    held = [tp for tps in consumers_seen for tp in tps if tp.topic in topics]
    expected = {TopicPartition(t, p) for t in topics for p in range(settings.raw_partitions)}
    together = all(
        (TopicPartition(settings.raw_topic, p) in tps) == (TopicPartition(settings.keyed_topic, p) in tps)
        for tps in consumers_seen for p in range(settings.raw_partitions)
    )  # fmt: skip
    return len(held) == len(expected) and set(held) == expected and together


def generation(member: Member) -> int:
    """The group generation this member is in (aiokafka has no public accessor for it)."""
    coordinator = member.consumer._coordinator
    return -1 if coordinator is None else int(coordinator.generation)


async def settled(members: list[Member], settings: Settings, within: float) -> int:
    """The generation once every member holds its share of a complete assignment."""

    found: list[int] = []

    def one_generation() -> bool:
        generations = {generation(m) for m in members}
        if complete([m.held for m in members], settings) and all(m.held for m in members) and len(generations) == 1:
            found.append(generations.pop())
        return bool(found)

    await wait_until(one_generation, within, "a complete assignment", every=0.1)
    return found[0]


async def test_each_member_that_joins_costs_one_rebalance_and_the_group_then_stays(six_partitions: Settings) -> None:
    settings = six_partitions
    stop = asyncio.Event()
    members: list[Member] = []
    running: list[asyncio.Task[None]] = []
    try:
        last = 0
        for _ in range(MEMBERS):
            members.append(Member(settings))
            running.append(asyncio.create_task(members[-1].run(stop)))
            now = await settled(members, settings, within=25)
            assert now == last + 1, f"{len(members)} members: generation {last} became {now}, not {last + 1}"
            last = now
        # a rejoin's time, several times over: a rebalance storm would show here (a member
        # rejoining gets its heartbeats refused until the group has settled again)
        marks = [m.heartbeats for m in members]
        await wait_until(lambda: all(m.heartbeats >= mark + 3 for m, mark in zip(members, marks, strict=True)), 60,
                         "three accepted heartbeats of every member")  # fmt: skip
        assert {generation(m) for m in members} == {last}, "the group rebalanced with no member joining or leaving"
    finally:
        stop.set()
        await asyncio.wait(running, timeout=30)  # a member caught in a rebalance may not leave
