"""The keyed stage's batch body — the one the worker runs and the tests drive — and its fencing.

A batch is the keyed records the consumer handed over, from any of this worker's partitions:

1. every item goes through :class:`~pipeline.processor.Processor` (an item that fails becomes a
   dead letter; state is bounded by the caps in ``pipeline.state``);
2. the rows go to the warehouse (``pipeline.sink``: an unavailable warehouse is waited out, a
   rejected row becomes a dead letter, the rest lands);
3. dead letters go to the DLQ topic;
4. per partition, one Kafka transaction commits the partition's changelog records and the
   consumed offset, through that partition's own transactional producer.

**Fencing.** Each keyed partition has one transactional id, ``{group}.keyed.{partition}``. A
worker that is assigned a partition starts a producer with that id before it reads the
partition's state or committed offset: Kafka then aborts any transaction the previous owner
left open and fences its producer for good. A previous owner that was paused, partitioned or
slow — and comes back still holding a batch — fails at its commit (``ProducerFenced``): its
state changes and offsets are dropped, not applied. The rows it may have written before it found
out are the rows the new owner writes for the same records (``pipeline.rows``), so nothing
counts twice. This is Kafka's per-input-partition fencing (KIP-98); aiokafka has no KIP-447
group-metadata commits, which would allow one producer per worker instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from pipeline.processor import Incoming, Processor, Stores
from pipeline.records import decoder as routed_decoder
from pipeline.retry import DEFAULT_BACKOFF, Backoff
from pipeline.rows import Writes
from pipeline.sink import WarehouseSink
from pipeline.state import CompanyState, Seen, UnitState, UserState
from pipeline.statestore import StateStore
from sluice.envelope import DeadLetter, encoder

log = logging.getLogger("sluice.worker")

MAX_STATE_VALUE = 1 << 20
"""Bytes of one state value; a larger one is not written (counted as ``state_value``). The caps in
``pipeline.state`` keep real values far below it; this only makes the bound a guarantee."""

T = TypeVar("T")


class KindStore(Generic[T]):
    """One kind of state (a prefix of the store's keys) as msgspec structs."""

    def __init__(self, state: StateStore, prefix: str, kind: type[T], refused: Callable[[str], None]) -> None:
        self.state = state
        self.prefix = prefix.encode() + b"\x00"
        self.decoder = msgspec.json.Decoder(kind)
        self.refused = refused

    def get(self, key: str) -> T | None:
        value = self.state.get(self.prefix + key.encode())
        return None if value is None else self.decoder.decode(value)

    def set(self, key: str, value: T) -> None:
        encoded = encoder.encode(value)
        if len(encoded) > MAX_STATE_VALUE:
            self.refused("state_value")
            return
        self.state.put(self.prefix + key.encode(), encoded)


def stores_on(state: StateStore, refused: Callable[[str], None]) -> Stores:
    return Stores(
        seen=KindStore(state, "seen", Seen, refused),
        units=KindStore(state, "unit", UnitState, refused),
        users=KindStore(state, "user", UserState, refused),
        companies=KindStore(state, "company", CompanyState, refused),
    )


class Lost(Exception):
    """The partition's commit failed for good: ``fenced`` when another worker owns it now."""

    def __init__(self, partition: int, fenced: bool) -> None:
        super().__init__(partition)
        self.fenced = fenced


@dataclass
class Fencing:
    """The transactional producers of the keyed partitions this worker owns now."""

    bootstrap: str
    group: str
    kafka: dict[str, Any] = field(default_factory=dict)
    producers: dict[int, AIOKafkaProducer] = field(default_factory=dict)

    def transactional_id(self, partition: int) -> str:
        return f"{self.group}.keyed.{partition}"

    async def acquire(self, partition: int) -> AIOKafkaProducer:
        """The partition's producer, started: once this returns, every earlier owner is fenced and
        its open transaction aborted, so the committed state and offset are final."""
        producer = self.producers.get(partition)
        if producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, transactional_id=self.transactional_id(partition),
                enable_idempotence=True, acks="all", linger_ms=0, max_batch_size=1_000_000, max_request_size=4 << 20,
                request_timeout_ms=30_000, **self.kafka,
            )  # fmt: skip
            await producer.start()
            try:
                await producer.begin_transaction()  # waits for the producer id: the fencing point
                await producer.abort_transaction()
            except BaseException:
                await producer.stop()
                raise
            self.producers[partition] = producer
        return producer

    async def release(self, partition: int) -> None:
        producer = self.producers.pop(partition, None)
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError as exc:  # a fenced producer may complain on the way out
                log.info("stopping the producer of partition %s: %s", partition, exc)

    async def close(self) -> None:
        for partition in list(self.producers):
            await self.release(partition)


@dataclass
class KeyedStage:
    """The keyed stage of one worker: state, processor, sink, fencing (see the module docstring)."""

    state: StateStore
    processor: Processor
    sink: WarehouseSink
    fencing: Fencing
    topic: str
    send_letters: Callable[[list[DeadLetter]], Any]
    """Awaitable: produce dead letters to the DLQ topic (acknowledged before the commit)."""
    retry: Backoff = DEFAULT_BACKOFF

    async def run(self, records: list[tuple[int, int, bytes]]) -> tuple[Writes, dict[str, int], dict[int, bool]]:
        """Process ``records`` — (partition, offset, value), in offset order per partition — end
        to end. Returns the writes, the rows written per table and the partitions lost (fenced:
        their records must not be processed again here until they are assigned anew), each with
        whether it was fenced."""
        writes = self.process(records)
        written = await self.write(writes)
        return writes, written, await self.commit(writes)

    def process(self, records: list[tuple[int, int, bytes]]) -> Writes:
        """The batch's rows and dead letters; its state changes staged for ``commit``."""
        writes = self.processor.begin()
        for partition, offset, value in records:
            if offset <= writes.last_offset.get(partition, -1):
                continue  # already in this batch: counting it twice would add to its rollup rows
            writes.last_offset[partition] = offset
            try:
                items = routed_decoder.decode(value)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                writes.letters.append(_undecodable(value, f"undecodable keyed record: {exc}"))
                continue
            for index, item in enumerate(items):
                self.processor.process_one(Incoming(partition, offset, item, index), writes)
        self.processor.save_state(self._changelog_to)
        return self.processor.finish(writes)

    async def write(self, writes: Writes) -> dict[str, int]:
        """The rows to the warehouse, the dead letters (rejected rows too) to the DLQ topic."""
        written, rejected = await self.sink.write(writes)
        letters = writes.letters + rejected
        if letters:
            await self.send_letters(letters)
        return written

    async def commit(self, writes: Writes) -> dict[int, bool]:
        """Each partition's state and offset in its own transaction, side by side; returns the
        partitions lost, each with whether it was fenced."""
        partitions = sorted(writes.last_offset.items())
        outcomes = await asyncio.gather(*(self._commit(p, last) for p, last in partitions), return_exceptions=True)
        lost = {}
        for (partition, _), outcome in zip(partitions, outcomes, strict=True):
            if isinstance(outcome, Lost):
                lost[partition] = outcome.fenced
            elif isinstance(outcome, BaseException):
                raise outcome
        return lost

    def _changelog_to(self, partition: int) -> None:
        self.state.partition = partition  # each key's changelog record goes to the key's partition

    async def _commit(self, partition: int, last: int) -> None:
        await commit_partition(self.state, self.fencing, self.topic, partition, last, self.retry)


async def commit_partition(
    state: StateStore, fencing: Fencing, topic: str, partition: int, last: int, retry: Backoff = DEFAULT_BACKOFF
) -> None:
    """Commit the partition's staged state and ``last + 1`` as its consumed offset of ``topic``;
    wait out an unavailable Kafka; raise :class:`Lost` when the producer was fenced or broke (the
    staged state is then dropped: the records will be processed again, by whoever owns them)."""
    delays = retry.delays()
    while True:
        producer = fencing.producers.get(partition)
        if producer is None:
            state.discard(partition)
            raise Lost(partition, fenced=False)
        try:
            await state.commit(producer, partition, TopicPartition(topic, partition), last + 1, fencing.group)
            return
        except ProducerFenced:
            log.warning("partition %s moved to another worker: its batch is dropped here", partition)
            await _drop(state, fencing, partition)
            raise Lost(partition, fenced=True) from None
        except KafkaError as exc:
            if not exc.retriable:  # the producer is unusable: start again with a fresh one
                await _drop(state, fencing, partition)
                raise Lost(partition, fenced=False) from exc
            delay = delays.next()
            log.warning("committing partition %s failed, retrying in %.1fs: %s", partition, delay, exc)
            await asyncio.sleep(delay)


async def _drop(state: StateStore, fencing: Fencing, partition: int) -> None:
    await fencing.release(partition)
    state.discard(partition)
    state.revoke({partition})


def _undecodable(value: bytes, reason: str) -> DeadLetter:
    return DeadLetter(
        family="", route="", org_id="", reason=reason, received_at=0.0, source="worker",
        payload=msgspec.Raw(msgspec.json.encode(value.decode("utf-8", "replace"))),
    )  # fmt: skip
