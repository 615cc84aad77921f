"""The keyed stage's state: a local RocksDB (rocksdict) in front of one compacted changelog topic.

Why not Faust tables (which this replaced):

- **Correctness under rebalance.** On revocation Faust hands a partition's table back *before* it
  waits for the agents to finish the events they already hold (``take_events`` batches), so
  those events were processed against an empty table: first exposures counted twice, tracks left
  unattributed (found by the three-worker rebalance test). Here the local data stays; a
  partition is only marked stale on revocation and caught up from the changelog before this
  worker processes it again.
- **Atomic with the offsets.** ``commit`` writes a partition's changelog records and the consumed
  offset in one Kafka transaction of the partition's fenced producer: a worker that lost the
  partition cannot commit state for it any more, and state never runs ahead of the offsets.
- **Speed.** A changelog record per key went through Faust's and aiokafka's per-message machinery
  (most of the worker's time in the profile). Here a batch's records for a partition go into
  aiokafka batch builders directly: one produce request per partition per batch.

Layout: keys are unique across partitions (a key lives in the partition its records are routed
to), so one local database holds every partition's keys, plus, per partition, the changelog
offset it has applied (its checkpoint). Values are full values, never deltas: the changelog's
newest record for a key is the state, which is what compaction keeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from operator import itemgetter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch

log = logging.getLogger("sluice.worker")

CHECKPOINT = b"\xff\xffcheckpoint\x00"
_first = itemgetter(0)


def _options() -> Options:
    """RocksDB tuned for what the keyed stage does most: look up a new message id, which misses,
    and write it. Measured at 1 M ids (µs a lookup that misses / a write), from 2.4 / 2.0:

    - a bloom filter (10 bits a key) on every table: a miss need not read an index and a block
      of every level (at 3 M ids: 9.0 µs a miss without); kept in table readers' memory, not the
      small block cache, where they thrash;
    - a bloom filter on the memtable, by whole key: without one, a miss searched the memtable's
      skip list (hundreds of thousands of keys, every step a cache miss): 2.4 → 0.45;
    - 16 MB memtables instead of 64: a write into a smaller skip list is cheaper (2.4 → 1.3),
      for a little more flushing and compaction in RocksDB's own threads.
    """
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    options = Options(raw_mode=True)
    options.set_block_based_table_factory(table)
    options.set_memtable_whole_key_filtering(True)
    options.set_memtable_prefix_bloom_ratio(0.1)
    options.set_write_buffer_size(16 << 20)
    return options


class StateStore:
    def __init__(self, path: Path, topic: str, bootstrap: str, kafka: dict[str, Any] | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.kafka = kafka or {}
        """aiokafka security options (``sluice.kafkaconf``) for the recovery consumer."""
        # The options again for the default column family: rocksdict applies ``options`` only to
        # the column families it creates, so a store opened again (every restart) silently ran
        # on RocksDB's default table: no bloom filters, and every lookup of a new id read and
        # decompressed a block of each level (40-57 µs a miss at about 12 M ids, against about 1).
        self.db = Rdict(str(path), options=_options(), column_families={"default": _options()})
        self.topic = topic
        self.bootstrap = bootstrap
        self.ready: set[int] = set()
        """Partitions whose local state is caught up with the changelog since they were assigned."""
        self.pending: dict[int, list[tuple[bytes, bytes | None]]] = {}

    async def stop(self) -> None:
        self.db.close()

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Stage a write for ``partition``'s commit (the key's partition: its changelog record
        goes there); readers see it only after the commit."""
        self.pending.setdefault(partition, []).append((key, value))

    def delete(self, key: bytes, partition: int) -> None:
        """Stage a delete (a tombstone in the changelog, which compaction then drops)."""
        self.pending.setdefault(partition, []).append((key, None))

    def scan(self, prefix: bytes, start: bytes, limit: int) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """Up to ``limit`` committed (key, value) pairs under ``prefix``, from ``start`` on; and the
        key to start the next scan at, or None once the prefix is exhausted."""
        it = self.db.iter()
        it.seek(max(start, prefix))
        out: list[tuple[bytes, bytes]] = []
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                return out, None
            if len(out) == limit:
                return out, key
            out.append((key, it.value()))
            it.next()
        return out, None

    def checkpoint(self, partition: int) -> int | None:
        raw = self.db.get(CHECKPOINT + str(partition).encode())
        return None if raw is None else int(raw)

    async def commit(self, producer: AIOKafkaProducer, partition: int, items: list[tuple[bytes, bytes | None]],
                     offsets: dict[TopicPartition, int], group: str,
                     forward: list[tuple[str, int, bytes]] | None = None) -> int:  # fmt: skip
        """Commit ``partition``'s staged writes ``items`` (what :meth:`take` handed over), the
        ``forward`` records (topic, partition, value) and the consumed positions ``offsets`` in one
        Kafka transaction of ``producer`` (the partition's own, see ``pipeline.keyed.Fencing``),
        then apply the writes locally with the new checkpoint.

        Raises what the transaction raised (the caller keeps ``items`` for a retry, or drops
        them). Returns the number of changelog records written."""
        async with producer.transaction():
            futures = await self._send(producer, partition, items)
            await _send_values(producer, forward or [])
            committed = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
            await producer.send_offsets_to_transaction(committed, group)
        checkpoint = None
        for count, future in futures:
            metadata = await future
            checkpoint = metadata.offset + count - 1
        self.apply(items, {partition: checkpoint} if checkpoint is not None else {})
        return len(items)

    def apply(self, items: list[tuple[bytes, bytes | None]], checkpoints: dict[int, int]) -> None:
        """Write committed (key, value) pairs locally (None deletes) with the partitions' new
        changelog checkpoints, in one RocksDB write."""
        writes = WriteBatch(raw_mode=True)
        for partition, checkpoint in checkpoints.items():
            writes.put(CHECKPOINT + str(partition).encode(), str(checkpoint).encode())
        # In key order: RocksDB inserts each key into its memtable's skip list from where the one
        # before went, so a sorted batch writes in half the time of a random one (measured: 1.3 →
        # 0.6 µs a key, 0.25 to sort). The sort is stable: a key's delete and put keep their order.
        for key, value in sorted(items, key=_first):
            if value is None:
                writes.delete(key)
            else:
                writes.put(key, value)
        self.db.write(writes)

    def take(self, partitions: Collection[int]) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """What is staged for ``partitions``, for a batch's commit (``commit(items=…)``); their
        staging starts again empty for the next batch, which may be processed while this one
        commits. Other partitions' stay staged (the pruner's deletes wait for a batch of theirs)."""
        return {p: self.pending.pop(p) for p in partitions if p in self.pending}

    def discard(self, partition: int) -> None:
        """Forget ``partition``'s staged writes (its transaction failed for good)."""
        self.pending.pop(partition, None)

    async def _send(
        self, producer: AIOKafkaProducer, partition: int, items: list[tuple[bytes, bytes | None]]
    ) -> list[tuple[int, asyncio.Future[Any]]]:
        """The staged records of one partition as few produce batches; (records, ack) per batch."""
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        batch, count = producer.create_batch(), 0
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                sent.append((count, await producer.send_batch(batch, self.topic, partition=partition)))
                batch, count = producer.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
            count += 1
        if count:
            sent.append((count, await producer.send_batch(batch, self.topic, partition=partition)))
        return sent

    def revoke(self, partitions: set[int]) -> None:
        """These partitions may be changed by another worker from now on: catch up before using them."""
        self.ready -= partitions

    async def recover(self, partitions: set[int]) -> int:
        """Apply the changelog of ``partitions`` from each one's checkpoint to its end; mark them
        ready. Returns the number of records applied."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",  # an aborted (fenced) transaction's records are not state
            **self.kafka,
        )  # fmt: skip
        await consumer.start()
        applied = 0
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
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


async def _send_values(producer: AIOKafkaProducer, records: list[tuple[str, int, bytes]]) -> None:
    """Produce (topic, partition, value) records as one batch per partition (in a transaction:
    their acknowledgement is the commit's)."""
    batches: dict[tuple[str, int], Any] = {}
    for topic, partition, value in records:
        batch = batches.get((topic, partition))
        if batch is None:
            batch = batches[(topic, partition)] = producer.create_batch()
        if batch.append(key=None, value=value, timestamp=None) is None:  # full: send it, start another
            await producer.send_batch(batch, topic, partition=partition)
            batch = batches[(topic, partition)] = producer.create_batch()
            batch.append(key=None, value=value, timestamp=None)  # an empty batch takes any record
    for (topic, partition), batch in batches.items():
        await producer.send_batch(batch, topic, partition=partition)
