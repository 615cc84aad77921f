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

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from rocksdict import Options, Rdict, WriteBatch

from pipeline.state import Seen

log = logging.getLogger("sluice.worker")

CHECKPOINT = b"\xff\xffcheckpoint\x00"
MAX_BATCH_BYTES = 1_000_000


class StateStore:
    def __init__(self, path: Path, topic: str, bootstrap: str, request_timeout: float = 30.0) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.request_timeout = request_timeout
        """Seconds aiokafka tries one produce before ``commit`` sees an error and starts again."""
        self.db = Rdict(str(path), options=Options(raw_mode=True))
        self.topic = topic
        self.bootstrap = bootstrap
        self.ready: set[int] = set()
        """Partitions whose local state is caught up with the changelog since they were assigned."""
        self.partition = 0
        """The partition that ``put`` writes to (the worker points it at each key's partition)."""
        self.pending: dict[int, list[tuple[bytes, bytes | None]]] = {}
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                max_batch_size=MAX_BATCH_BYTES, linger_ms=0, request_timeout_ms=int(self.request_timeout * 1000),
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

    def delete(self, key: bytes) -> None:
        """Stage a delete (a tombstone in the changelog, which compaction then drops)."""
        self.pending.setdefault(self.partition, []).append((key, None))

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

    async def commit(self, retry_seconds: float = 0.5, max_retry_seconds: float = 10.0) -> int:
        """Send the staged writes to the changelog and wait for Kafka's acknowledgement — retrying,
        with backoff, while Kafka cannot take them — then apply them locally with the new
        checkpoints. Returns the number of records written."""
        if not self.pending:
            return 0
        delay = retry_seconds
        while True:
            try:
                checkpoints = await self._send_pending()
                break
            except KafkaError as exc:  # values are whole values: sending them twice is harmless
                log.warning("state changelog write failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_retry_seconds)
        writes = WriteBatch(raw_mode=True)
        for partition, offset in checkpoints.items():
            writes.put(CHECKPOINT + str(partition).encode(), str(offset).encode())
        records = 0
        for items in self.pending.values():
            for key, value in items:
                if value is None:
                    writes.delete(key)
                else:
                    writes.put(key, value)
            records += len(items)
        self.db.write(writes)
        self.pending.clear()
        return records

    async def _send_pending(self) -> dict[int, int]:
        """One produce of everything staged; the last changelog offset written per partition."""
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
        checkpoints: dict[int, int] = {}
        for partition, count, future in sent:
            metadata = await future
            checkpoints[partition] = max(checkpoints.get(partition, -1), metadata.offset + count - 1)
        return checkpoints

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


class SeenPruner:
    """Removes dedupe entries (``Seen``, under ``prefix``) older than the window plus a margin, so
    the store does not grow for ever: a slice of keys per call, a full pass, then a rest.

    Pruning changes no answer: an entry past the window no longer makes a copy a duplicate. The
    margin (a day) covers a worker working through a backlog, whose events' ``received_at`` lies
    behind the clock. Call it *before* a batch is processed, so that a key the batch writes again
    is deleted first and written after, in the changelog and locally.
    """

    def __init__(
        self, state: StateStore, prefix: bytes, window: float, *, margin: float = 86400.0,
        interval: float = 3600.0, per_call: int = 20_000, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.state, self.prefix, self.window, self.margin = state, prefix, window, margin
        self.interval, self.per_call, self.clock = interval, per_call, clock
        self.cursor: bytes | None = None
        self.next_pass = clock() + 60.0  # not in the middle of start-up

    def step(self) -> int:
        """Stage deletes for the expired entries of the next slice; returns how many."""
        now = self.clock()
        if self.cursor is None:
            if now < self.next_pass:
                return 0
            self.cursor = self.prefix
        items, self.cursor = self.state.scan(self.prefix, self.cursor, self.per_call)
        removed = 0
        for key, value in items:
            seen = _seen_decoder.decode(value)
            partition = seen.source[0]
            if now - seen.at > self.window + self.margin and partition in self.state.ready:
                self.state.partition = partition
                self.state.delete(key)
                removed += 1
        if self.cursor is None:
            self.next_pass = now + self.interval
        return removed


_seen_decoder = msgspec.json.Decoder(Seen)
