"""The worker's state store on the real broker: writes are in the changelog once ``commit``
returns; another worker's store recovers them; a partition handed back catches up on what its
other owner wrote, reading only the tail past its checkpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipeline.keyed import Fencing, KeyedStage
from pipeline.processor import Processor
from pipeline.rows import Writes
from pipeline.statestore import StateStore
from pipeline.stores import Stores
from sluice.retry import Backoff
from sluice.settings import Settings

pytestmark = pytest.mark.kafka


async def test_committed_state_survives_into_another_store(kafka_settings: Settings, tmp_path: Path) -> None:
    topic = kafka_settings.state_topic  # two partitions in tests
    first = StateStore(tmp_path / "a", topic, kafka_settings.kafka_bootstrap)
    await first.recover({0, 1})  # an empty topic: ready at once
    try:
        for partition in (0, 1):
            for n in range(300):
                first.put(f"k{partition}-{n}".encode(), f"v{n}".encode(), partition)
        assert first.get(b"k0-1") is None  # staged, not yet committed
        assert await commit(first, Fencing(kafka_settings.kafka_bootstrap, "g"), kafka_settings) == 600
        assert first.get(b"k0-1") == b"v1" and first.get(b"k1-299") == b"v299"
        assert first.checkpoint(0) == 299 and first.checkpoint(1) == 299

        # Another worker, no local state: everything from the changelog.
        second = StateStore(tmp_path / "b", topic, kafka_settings.kafka_bootstrap)
        try:
            assert await second.recover({1}) == 300
            assert second.get(b"k1-7") == b"v7"
            assert second.get(b"k0-7") is None  # partition 0 is not its own

            # It owns partition 1 for a while and changes a key ...
            second.put(b"k1-7", b"changed", 1)
            await commit(second, Fencing(kafka_settings.kafka_bootstrap, "g"), kafka_settings)
        finally:
            await second.stop()

        # ... and when partition 1 comes back, the first store reads only that tail.
        first.revoke({1})
        assert 1 not in first.ready
        assert await first.recover({1}) == 1
        assert first.get(b"k1-7") == b"changed"
        assert first.checkpoint(1) == 302  # each transaction ends in a commit marker
    finally:
        await first.stop()


async def test_a_value_larger_than_a_batch_goes_in_a_batch_of_its_own(kafka_settings: Settings, tmp_path: Path) -> None:
    store = StateStore(tmp_path / "s", kafka_settings.state_topic, kafka_settings.kafka_bootstrap)
    try:
        store.put(b"small", b"x", 0)
        store.put(b"huge", b"x" * 1_200_000, 0)
        store.put(b"after", b"y", 0)
        assert await commit(store, Fencing(kafka_settings.kafka_bootstrap, "g"), kafka_settings) == 3
        again = StateStore(tmp_path / "t", kafka_settings.state_topic, kafka_settings.kafka_bootstrap)
        try:
            assert await again.recover({0}) == 3
            assert again.get(b"huge") == b"x" * 1_200_000 and again.get(b"after") == b"y"
        finally:
            await again.stop()
    finally:
        await store.stop()


async def test_the_pruner_removes_expired_dedupe_entries_everywhere(kafka_settings: Settings, tmp_path: Path) -> None:
    from pipeline.pruner import SeenPruner
    from pipeline.state import RAW_SOURCE, Seen
    from sluice.envelope import encoder

    now = 1_800_000_000.0
    day = 86400.0
    store = StateStore(tmp_path / "a", kafka_settings.state_topic, kafka_settings.kafka_bootstrap)
    await store.recover({0, 1})
    try:
        ages = {"a-fresh": 1 * day, "b-expired": 9 * day, "c-in-margin": 7.5 * day, "d-ancient": 400 * day}
        for n, (name, age) in enumerate(ages.items()):
            # d-ancient was first seen in a raw record (most ids are): its source is RAW_SOURCE + 1
            source = n % 2 + (RAW_SOURCE if name == "d-ancient" else 0)
            store.put(f"seen\x00{name}".encode(), encoder.encode(Seen((source, n, 0), now - age)), n % 2)
        store.put(b"unit\x00not-a-seen-entry", b"{}", 1)
        await commit(store, Fencing(kafka_settings.kafka_bootstrap, "g"), kafka_settings)

        pruner = SeenPruner(store, b"seen\x00", 7 * day, per_call=2, clock=lambda: now)
        pruner.next_pass = now  # due
        removed = [pruner.step(), pruner.step(), pruner.step()]  # two slices, then resting
        assert removed == [1, 1, 0]  # one expired entry in each slice of two keys
        await commit(store, Fencing(kafka_settings.kafka_bootstrap, "g"), kafka_settings)
        assert store.get(b"seen\x00b-expired") is None and store.get(b"seen\x00d-ancient") is None
        assert store.get(b"seen\x00a-fresh") is not None and store.get(b"seen\x00c-in-margin") is not None
        assert store.get(b"unit\x00not-a-seen-entry") == b"{}"

        other = StateStore(tmp_path / "b", kafka_settings.state_topic, kafka_settings.kafka_bootstrap)
        try:
            await other.recover({0, 1})  # the tombstones travel with the changelog
            assert other.get(b"seen\x00b-expired") is None and other.get(b"seen\x00a-fresh") is not None
        finally:
            await other.stop()
    finally:
        await store.stop()


async def test_commit_waits_out_a_kafka_outage(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> None:
    """The broker goes away before a commit: the commit waits until it is back, then lands. (With the
    leader still known aiokafka itself keeps trying; when a produce does fail — no leader, say —
    ``commit`` sends the whole batch again.)"""
    from commands.localkafka import LocalKafka, ensure_jars, free_port
    from sluice.topics import ensure_topics

    request.getfixturevalue("kafka_bootstrap")  # the marker check; this test brings its own broker
    broker = LocalKafka(tmp_path / "kafka", ensure_jars(), port=free_port())
    broker.start(heap="256m")
    try:
        await asyncio.to_thread(broker.wait_ready)
        mine = Settings.from_env(settings.to_env(), kafka_bootstrap=broker.bootstrap)
        await ensure_topics(mine)
        store = StateStore(tmp_path / "s", mine.state_topic, mine.kafka_bootstrap)
        await store.recover({0, 1})
        store.put(b"before", b"1", 0)
        fencing = Fencing(mine.kafka_bootstrap, "outage-test")
        await commit(store, fencing, mine, close=False)  # the producer is up before the outage
        await asyncio.to_thread(broker.stop)
        store.put(b"during", b"2", 0)
        commit_task = asyncio.create_task(commit(store, fencing, mine))
        await asyncio.sleep(4)
        assert not commit_task.done() and store.get(b"during") is None  # waiting, not failed, not applied
        await asyncio.to_thread(broker.start, "256m")
        await asyncio.to_thread(broker.wait_ready)
        await asyncio.wait_for(commit_task, 90)
        assert store.get(b"during") == b"2"
        await store.stop()
        # A new owner fences before it reads the state (``Worker._take_on``): Kafka completes the
        # committed transaction first. Its markers are written after the commit returns, so a
        # read_committed reader that did not fence may read just before them (it did, once, here
        # just after the broker's restart).
        successor = Fencing(mine.kafka_bootstrap, "outage-test")
        await successor.acquire(0)
        again = StateStore(tmp_path / "t", mine.state_topic, mine.kafka_bootstrap)
        await again.recover({0})
        assert again.get(b"during") == b"2"  # in the changelog, not only local
        await again.stop()
        await successor.close()
    finally:
        broker.stop()


async def commit(store: StateStore, fencing: Fencing, settings: Settings, close: bool = True) -> int:
    """Commit every staged partition as the keyed stage commits a batch (``KeyedStage.commit``:
    each partition in its own fenced transaction, here with the keyed topic's offset 0 as
    consumed); returns the records written."""
    staged = sum(len(items) for items in store.pending.values())
    partitions = sorted(store.pending)
    processor = Processor(Stores.in_memory(), settings.keyed_topic)  # nothing is processed here
    stage = KeyedStage(store, processor, None, fencing, settings.keyed_topic, None,  # type: ignore[arg-type]
                       retry=Backoff(0.2, 1.0))  # fmt: skip
    writes = Writes(last_offset={(settings.keyed_topic, p): 0 for p in partitions}, staged=store.take(partitions))
    try:
        for partition in partitions:
            await fencing.acquire(partition)
        assert await stage.commit(writes) == {}, "a partition was lost"
    finally:
        if close:
            await fencing.close()
    return staged
