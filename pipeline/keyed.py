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
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced

from pipeline.batch import decode_keyed, decode_raw, split, take_keyed, take_raw, undecodable
from pipeline.items import Decoded, Routed
from pipeline.processor import Processor
from pipeline.rows import Writes
from pipeline.sink import EventRows, WarehouseSink
from pipeline.statestore import StateStore
from sluice.envelope import RAW_RECORD_BYTES, DeadLetter
from sluice.kafkaconf import durable_producer
from sluice.retry import DEFAULT_BACKOFF, Backoff, retrying

log = logging.getLogger("sluice.worker")

YIELD_EVERY = 64
"""Records processed between two yields to the event loop: a step is seconds of CPU, and the
consumer's heartbeats (a 10 s session) run on the same loop."""
EARLY_ROWS = 8192
"""Event rows a step hands to the warehouse at a time while it processes the rest
(``pipeline.sink.EventRows``)."""
Record = tuple[str, int, int, bytes]
"""(topic, partition, offset, value): a raw or keyed record the consumer handed over."""


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
            producer = durable_producer(
                self.bootstrap, self.kafka, transactional_id=self.transactional_id(partition), linger_ms=0,
                max_batch_size=1_000_000, max_request_size=RAW_RECORD_BYTES, request_timeout_ms=30_000,
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


Outcome = tuple[dict[str, int], dict[int, bool]]
"""A batch's end: the rows written per table, and the partitions lost, each with whether it was fenced."""


@dataclass
class InFlight:
    """A processed batch, its write and commit running (``KeyedStage.start``)."""

    writes: Writes
    early: EventRows
    task: asyncio.Task[Outcome]

    async def cancel(self) -> None:
        """Stop the write and commit midway (the worker is stopping): nothing more is committed, and
        the records are processed again by whoever owns their partitions next."""
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        with contextlib.suppress(BaseException):
            await self.early.abandon()  # if the task was cancelled before it ran


@dataclass
class KeyedStage:
    """The keyed stage of one worker: state, processor, sink, fencing (see the module docstring)."""

    state: StateStore
    processor: Processor
    sink: WarehouseSink
    fencing: Fencing
    topic: str
    """The keyed topic (forwarded items)."""
    send_letters: Callable[[list[DeadLetter]], Any]
    """Awaitable: produce dead letters to the DLQ topic (acknowledged before the commit)."""
    raw_topic: str = ""
    partitions: int = 1
    """Of the raw and keyed topics (the same number: partition p of each is one worker's)."""
    retry: Backoff = DEFAULT_BACKOFF

    async def start(self, records: list[Record], prepared: dict[tuple[str, int, int], Decoded] | None = None,
                    before_commit: Callable[[Writes], Awaitable[None]] | None = None) -> InFlight:  # fmt: skip
        """The batch body, as the worker runs it for every batch: ``records`` — raw and keyed, in
        offset order per topic partition, ``prepared`` by ``prepare`` or not — processed
        (``process``, their event rows handed to the warehouse as they are made), then, once
        ``before_commit`` has returned (the worker waits there for the batch before it to commit,
        and drops what that one lost), written and committed by a task of their own
        (``conclude``), so that the next batch is processed meanwhile. The batch's state is read by
        the batches after it until ``settle`` takes its outcome."""
        writes, early = self.begin()
        try:
            await self.process(records, writes, early, prepared)
            if before_commit is not None:
                await before_commit(writes)
        except BaseException:
            await early.abandon()
            self.processor.release(writes)
            raise
        return InFlight(writes, early, asyncio.create_task(self.conclude(writes, early)))

    async def settle(self, batch: InFlight) -> Outcome:
        """Wait for a started batch's write and commit: the rows written per table, and the
        partitions it lost (their records must not be processed again here until they are
        assigned anew), each with whether it was fenced. Its state is released either way (in
        the store once committed; dropped with the partitions let go otherwise)."""
        try:
            return await batch.task
        finally:
            self.processor.release(batch.writes)

    def begin(self) -> tuple[Writes, EventRows]:
        """A batch's writes, and its event rows' early writer."""
        writes = self.processor.begin()
        return writes, EventRows(self.sink, writes.events, EARLY_ROWS)

    async def conclude(self, writes: Writes, early: EventRows) -> Outcome:
        """A processed batch's rows and dead letters written, then its commit (see ``settle``)."""
        try:
            written = await self.write(writes, early)
        except BaseException:
            await early.abandon()
            raise
        return written, await self.commit(writes)

    async def prepare(self, records: list[Record]) -> dict[tuple[str, int, int], Decoded]:
        """What the records are without any state: raw batches normalized, keyed records decoded.
        Pure, so a worker runs it while the previous batch's write and commit are in flight
        (``pipeline.worker``); ``process`` then takes these instead of decoding again."""
        out: dict[tuple[str, int, int], Decoded] = {}
        for position, (topic, partition, offset, value) in enumerate(records):
            if position % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            try:
                out[(topic, partition, offset)] = self._decode(topic, value)
            except Exception:  # processing decodes it again, and makes a dead letter of it
                log.exception("a record at %s:%s:%s could not be decoded", topic, partition, offset)
        return out

    def _decode(self, topic: str, value: bytes) -> Decoded:
        return decode_raw(value) if topic == self.raw_topic else decode_keyed(value)

    async def process(self, records: list[Record], writes: Writes | None = None, early: EventRows | None = None,
                      prepared: dict[tuple[str, int, int], Decoded] | None = None) -> Writes:  # fmt: skip
        """The batch's rows, dead letters and forwarded items (into ``writes``, or new ones); its
        state changes staged for ``commit``. With ``early``, event rows go to the warehouse as
        they are made; with ``prepared`` (``prepare``'s), records are not decoded again."""
        writes = writes if writes is not None else self.processor.begin()
        prepared = prepared or {}
        forwarding: dict[int, dict[int, list[Routed]]] = {}
        for position, (topic, partition, offset, value) in enumerate(records):
            if position % YIELD_EVERY == YIELD_EVERY - 1:
                if early is not None:
                    early.poll()
                await asyncio.sleep(0)
            if offset <= writes.last_offset.get((topic, partition), -1):
                continue  # already in this batch: counting it twice would add to its rollup rows
            writes.last_offset[(topic, partition)] = offset
            decoded = prepared.get((topic, partition, offset))
            if topic == self.raw_topic:
                try:
                    take_raw(self.processor, self.partitions, partition, offset, decoded or decode_raw(value), writes,
                             forwarding.setdefault(partition, {}))  # fmt: skip
                except Exception as exc:  # a bug, an input nobody foresaw: this record only, never the stage
                    log.exception("a raw record at %s:%s could not be processed", partition, offset)
                    reason = f"worker could not process the raw record: {type(exc).__name__}: {exc}"
                    writes.letters.append(undecodable(value, reason, time.time()))
                continue
            take_keyed(self.processor, partition, offset, decoded or decode_keyed(value), writes)
        self.processor.save_state(writes)
        writes.staged = self.state.take({partition for _, partition in writes.last_offset})
        for partition, by_destination in forwarding.items():
            writes.forward[partition] = [
                (destination, record)
                for destination, items in sorted(by_destination.items())
                for record in split(items, writes.letters)
            ]  # fmt: skip
        return self.processor.finish(writes)

    async def write(self, writes: Writes, early: EventRows | None = None) -> dict[str, int]:
        """The rows to the warehouse (those ``early`` has not written), the dead letters
        (rejected rows too) to the DLQ topic."""
        written, rejected = await self.sink.write(writes, early)
        letters = writes.letters + rejected
        if letters:
            await self.send_letters(letters)
        return written

    async def commit(self, writes: Writes) -> dict[int, bool]:
        """Each partition's state, forwarded items and consumed offsets (raw and keyed) in its own
        transaction, side by side; returns the partitions lost, each with whether it was fenced."""
        offsets: dict[int, dict[TopicPartition, int]] = {}
        for (topic, partition), last in writes.last_offset.items():
            offsets.setdefault(partition, {})[TopicPartition(topic, partition)] = last + 1
        partitions = sorted(offsets)
        outcomes = await asyncio.gather(
            *(self._commit(p, offsets[p], writes.forward.get(p, []), writes.staged.get(p, [])) for p in partitions),
            return_exceptions=True,
        )  # fmt: skip
        lost = {}
        for partition, outcome in zip(partitions, outcomes, strict=True):
            if isinstance(outcome, Lost):
                lost[partition] = outcome.fenced
            elif isinstance(outcome, BaseException):
                raise outcome
        return lost

    async def _commit(self, partition: int, offsets: dict[TopicPartition, int], forward: list[tuple[int, bytes]],
                      staged: list[tuple[bytes, bytes | None]]) -> None:  # fmt: skip
        await commit_partition(self.state, self.fencing, partition, offsets, [(self.topic, q, v) for q, v in forward],
                               self.retry, staged)  # fmt: skip


async def commit_partition(
    state: StateStore, fencing: Fencing, partition: int, offsets: dict[TopicPartition, int],
    forward: list[tuple[str, int, bytes]] | None = None, retry: Backoff = DEFAULT_BACKOFF,
    items: list[tuple[bytes, bytes | None]] | None = None,
) -> None:  # fmt: skip
    """Commit the partition's staged state (``items``, or what the state store has staged for it),
    the ``forward`` records (topic, partition, value) and the consumed ``offsets`` (next offset
    per topic partition); wait out an unavailable Kafka; raise :class:`Lost` when the producer was
    fenced or broke (the staged state is then dropped: the records will be processed again, by
    whoever owns them)."""
    if items is None:
        items = state.take([partition]).get(partition, [])
    staged = items

    async def attempt() -> None:
        producer = fencing.producers.get(partition)
        if producer is None:
            state.discard(partition)
            raise Lost(partition, fenced=False)
        try:
            await state.commit(producer, partition, staged, offsets, fencing.group, forward or [])
        except ProducerFenced:
            log.warning("partition %s moved to another worker: its batch is dropped here", partition)
            await _drop(state, fencing, partition)
            raise Lost(partition, fenced=True) from None
        except IllegalOperation as exc:  # aiokafka's word for a send after the transaction failed
            fenced = _fenced(producer)
            log.warning("partition %s: its transaction failed (%s): the batch is dropped here", partition,
                        "fenced by another worker" if fenced else exc)  # fmt: skip
            await _drop(state, fencing, partition)
            raise Lost(partition, fenced=fenced) from exc
        except KafkaError as exc:
            if not exc.retriable:  # the producer is unusable: start again with a fresh one
                await _drop(state, fencing, partition)
                raise Lost(partition, fenced=False) from exc
            raise  # retriable: waited out below

    await retrying(f"committing partition {partition}", attempt, (KafkaError,), retry)


def _fenced(producer: AIOKafkaProducer) -> bool:
    """Whether the producer's transaction failed because a newer owner fenced it. A fence found
    out while records are still being sent surfaces as ``IllegalOperation`` on the next send; the
    cause is kept by aiokafka's transaction manager (no public accessor: read defensively)."""
    waiter = getattr(getattr(producer, "_txn_manager", None), "_transaction_waiter", None)
    if waiter is None or not waiter.done() or waiter.cancelled():
        return False
    return isinstance(waiter.exception(), ProducerFenced)


async def _drop(state: StateStore, fencing: Fencing, partition: int) -> None:
    await fencing.release(partition)
    state.discard(partition)
    state.revoke({partition})
