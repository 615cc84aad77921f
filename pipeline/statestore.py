"""The keyed stage's state: a local RocksDB (rocksdict) in front of one compacted changelog topic.

Why not Faust tables (which this replaced):

- **Correctness under rebalance.** On revocation Faust hands a partition's table back *before* it
  waits for the agents to finish the events they already hold (``take_events`` batches), so
  those events were processed against an empty table: first exposures counted twice, tracks left
  unattributed (found by the three-worker rebalance test). Here the local data stays; a
  partition is only marked stale on revocation and caught up from the changelog before this
  worker processes it again.
- **Durability we can await.** Faust buffers changelog records and its flush returns while
  records are still buffered (it gives up after 0.1 s without progress). ``commit`` here returns
  once Kafka has acknowledged every record — the rule "state before rows" depends on it.
- **Speed.** A changelog record per key went through Faust's and aiokafka's per-message machinery
  (most of the worker's time in the profile). Here a batch's records for a partition go into
  aiokafka batch builders directly: one produce request per partition per batch.

Layout: keys are unique across partitions (a key lives in the partition its records are routed
to), so one local database holds every partition's keys, plus, per partition, the changelog
offset it has applied (its checkpoint). Values are full values, never deltas: the changelog's
newest record for a key is the state, which is what compaction keeps.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger("sluice.worker")

CHECKPOINT = b"\xff\xffcheckpoint\x00"
MAX_BATCH_BYTES = 1_000_000


class StateStore:
    def __init__(self, path: Path, topic: str, bootstrap: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), options=Options(raw_mode=True))
        self.topic = topic
        self.bootstrap = bootstrap
        self.ready: set[int] = set()
        """Partitions whose local state is caught up with the changelog since they were assigned."""
        self.partition = 0
        """The partition that ``put`` writes to (the worker points it at each key's partition)."""
        self.pending: dict[int, list[tuple[bytes, bytes]]] = {}
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                max_batch_size=MAX_BATCH_BYTES, linger_ms=0,
            )  # fmt: skip
            await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self.db.close()

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        """Stage a write for ``commit``; readers see it only after the commit."""
        self.pending.setdefault(self.partition, []).append((key, value))

    def checkpoint(self, partition: int) -> int | None:
        raw = self.db.get(CHECKPOINT + str(partition).encode())
        return None if raw is None else int(raw)

    async def commit(self) -> int:
        """Send the staged writes to the changelog and wait for Kafka's acknowledgement, then apply
        them locally with the new checkpoints. Returns the number of records written."""
        if not self.pending:
            return 0
        await self.start()
        producer = self._producer
        assert producer is not None
        sent = []
        for partition, items in self.pending.items():
            batch, count = producer.create_batch(), 0
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                    sent.append((partition, count, await producer.send_batch(batch, self.topic, partition=partition)))
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
                count += 1
            sent.append((partition, count, await producer.send_batch(batch, self.topic, partition=partition)))
        writes = WriteBatch(raw_mode=True)
        for partition, count, future in sent:
            metadata = await future
            writes.put(CHECKPOINT + str(partition).encode(), str(metadata.offset + count - 1).encode())
        records = 0
        for items in self.pending.values():
            for key, value in items:
                writes.put(key, value)
            records += len(items)
        self.db.write(writes)
        self.pending.clear()
        return records

    def revoke(self, partitions: set[int]) -> None:
        """These partitions may be changed by another worker from now on: catch up before using them."""
        self.ready -= partitions

    async def recover(self, partitions: set[int]) -> int:
        """Apply the changelog of ``partitions`` from each one's checkpoint to its end; mark them
        ready. Returns the number of records applied."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )  # fmt: skip
        await consumer.start()
        applied = 0
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)
            for tp in tps:
                checkpoint = self.checkpoint(tp.partition)
                if checkpoint is None or checkpoint + 1 > end[tp]:  # nothing local, or another topic's
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, checkpoint + 1)
            remaining = {tp for tp in tps if await consumer.position(tp) < end[tp]}
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=1000)
                writes = WriteBatch(raw_mode=True)
                for tp, messages in fetched.items():
                    for message in messages:
                        if message.offset < end[tp] and message.key is not None:
                            if message.value is None:
                                writes.delete(message.key)
                            else:
                                writes.put(message.key, message.value)
                            applied += 1
                self.db.write(writes)
                remaining = {tp for tp in remaining if await consumer.position(tp) < end[tp]}
            writes = WriteBatch(raw_mode=True)
            for tp in tps:
                if end[tp] > 0:
                    writes.put(CHECKPOINT + str(tp.partition).encode(), str(end[tp] - 1).encode())
            self.db.write(writes)
        finally:
            await consumer.stop()
        self.ready |= partitions
        log.info("state caught up", extra={"partitions": sorted(partitions), "records": applied})
        return applied
