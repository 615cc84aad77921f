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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced

from pipeline.canonical import CanonicalEvent
from pipeline.normalize import Invalid, normalize
from pipeline.processor import Processor, Stores, letter
from pipeline.records import Incoming, Routed, events_by_partition, people
from pipeline.records import decoder as routed_decoder
from pipeline.records import encoder as routed_encoder
from pipeline.retry import DEFAULT_BACKOFF, Backoff
from pipeline.rows import Writes
from pipeline.sink import EventRows, WarehouseSink
from pipeline.state import CompanyState, Seen, UnitState, UserState
from pipeline.statestore import StateStore
from sluice.envelope import DeadLetter, encoder, raw_batch_decoder

log = logging.getLogger("sluice.worker")

MAX_RECORD_BYTES = 900_000
"""Bytes of one keyed record: under Kafka's default 1 MB message limit, whatever the raw batch."""
YIELD_EVERY = 64
"""Records processed between two yields to the event loop: a step is seconds of CPU, and the
consumer's heartbeats (a 10 s session) run on the same loop."""
EARLY_ROWS = 8192
"""Event rows a step hands to the warehouse at a time while it processes the rest
(``pipeline.sink.EventRows``)."""
MAX_STATE_VALUE = 1 << 20
"""Bytes of one state value; a larger one is not written (counted as ``state_value``). The caps in
``pipeline.state`` keep real values far below it; this only makes the bound a guarantee."""

T = TypeVar("T")
Record = tuple[str, int, int, bytes]
"""(topic, partition, offset, value): a raw or keyed record the consumer handed over."""


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

    def set_all(self, values: dict[str, tuple[T, int]]) -> None:
        """Stage the values for the commit, each in its key's partition."""
        encode, prefix, pending = encoder.encode, self.prefix, self.state.pending  # a batch's every new id
        for key, (value, partition) in values.items():
            encoded = encode(value)
            if len(encoded) > MAX_STATE_VALUE:
                self.refused("state_value")
                continue
            pending.setdefault(partition, []).append((prefix + key.encode(), encoded))  # StateStore.put, inlined


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
    """The keyed topic (forwarded items)."""
    send_letters: Callable[[list[DeadLetter]], Any]
    """Awaitable: produce dead letters to the DLQ topic (acknowledged before the commit)."""
    raw_topic: str = ""
    partitions: int = 1
    """Of the raw and keyed topics (the same number: partition p of each is one worker's)."""
    retry: Backoff = DEFAULT_BACKOFF

    async def run(self, records: list[Record]) -> tuple[Writes, dict[str, int], dict[int, bool]]:
        """Process ``records`` — raw and keyed, in offset order per topic partition — end to end.
        Returns the writes, the rows written per table and the partitions lost (fenced: their
        records must not be processed again here until they are assigned anew), each with
        whether it was fenced."""
        writes, early = self.begin()
        try:
            await self.process(records, writes, early)
        except BaseException:
            await early.abandon()
            raise
        written, lost = await self.conclude(writes, early)
        return writes, written, lost

    def begin(self) -> tuple[Writes, EventRows]:
        """A batch's writes, and its event rows' early writer."""
        writes = self.processor.begin()
        return writes, EventRows(self.sink, writes.events, EARLY_ROWS)

    async def conclude(self, writes: Writes, early: EventRows) -> tuple[dict[str, int], dict[int, bool]]:
        """A processed batch's rows and dead letters written, then its commit (see ``run``)."""
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
        if topic == self.raw_topic:
            return decode_raw(value)
        try:
            return Decoded([], [], routed_decoder.decode(value), Counter())
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return Decoded([_undecodable(value, f"undecodable keyed record: {exc}")], [], [], Counter())

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
                    self._raw(partition, offset, decoded or decode_raw(value), writes,
                              forwarding.setdefault(partition, {}))  # fmt: skip
                except Exception as exc:  # a bug, an input nobody foresaw: this record only, never the stage
                    log.exception("a raw record at %s:%s could not be processed", partition, offset)
                    reason = f"worker could not process the raw record: {type(exc).__name__}: {exc}"
                    writes.letters.append(_undecodable(value, reason, time.time()))
                continue
            decoded = decoded or self._decode(topic, value)
            writes.letters += decoded.letters
            for index, item in enumerate(decoded.items):
                self.processor.process_one(Incoming(partition, offset, item, index), writes)
        self.processor.save_state()
        for partition, by_destination in forwarding.items():
            writes.forward[partition] = [
                (destination, record)
                for destination, items in sorted(by_destination.items())
                for record in split(items, writes.letters)
            ]  # fmt: skip
        return self.processor.finish(writes)

    def _raw(self, partition: int, offset: int, decoded: Decoded, writes: Writes,
             forwarding: dict[int, list[Routed]]) -> None:  # fmt: skip
        """A raw batch: its events of this partition's units processed here, every other item
        forwarded to its partition (committed with this partition's transaction). The user and
        company items of the events processed here go only for those that were new, ``checked``."""
        writes.letters += decoded.letters
        for key, count in decoded.normalized.items():
            writes.normalized[key] += count
        here: list[CanonicalEvent] = []
        elsewhere: list[CanonicalEvent] = []
        index = 0
        for destination, items in events_by_partition(decoded.events, self.partitions).items():
            for item in items:
                if destination != partition:  # the topic's partitions differ from the gateway's count
                    forwarding.setdefault(destination, []).append(item)
                    elsewhere.append(item.event)
                elif self.processor.process_one(Incoming(partition, offset, item, index, raw=True), writes):
                    here.append(item.event)
                index += 1
        for checked, events in ((True, here), (False, elsewhere)):
            for destination, items in people(events, self.partitions, checked).items():
                forwarding.setdefault(destination, []).extend(items)

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
            *(self._commit(p, offsets[p], writes.forward.get(p, [])) for p in partitions), return_exceptions=True
        )  # fmt: skip
        lost = {}
        for partition, outcome in zip(partitions, outcomes, strict=True):
            if isinstance(outcome, Lost):
                lost[partition] = outcome.fenced
            elif isinstance(outcome, BaseException):
                raise outcome
        return lost

    async def _commit(self, partition: int, offsets: dict[TopicPartition, int],
                      forward: list[tuple[int, bytes]]) -> None:  # fmt: skip
        await commit_partition(self.state, self.fencing, partition, offsets, [(self.topic, q, v) for q, v in forward],
                               self.retry)  # fmt: skip


async def commit_partition(
    state: StateStore, fencing: Fencing, partition: int, offsets: dict[TopicPartition, int],
    forward: list[tuple[str, int, bytes]] | None = None, retry: Backoff = DEFAULT_BACKOFF,
) -> None:  # fmt: skip
    """Commit the partition's staged state, the ``forward`` records (topic, partition, value) and
    the consumed ``offsets`` (next offset per topic partition); wait out an unavailable Kafka;
    raise :class:`Lost` when the producer was fenced or broke (the staged state is then dropped:
    the records will be processed again, by whoever owns them)."""
    delays = retry.delays()
    while True:
        producer = fencing.producers.get(partition)
        if producer is None:
            state.discard(partition)
            raise Lost(partition, fenced=False)
        try:
            await state.commit(producer, partition, offsets, fencing.group, forward or [])
            return
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
            delay = delays.next()
            log.warning("committing partition %s failed, retrying in %.1fs: %s", partition, delay, exc)
            await asyncio.sleep(delay)


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


def _undecodable(value: bytes, reason: str, received_at: float = 0.0) -> DeadLetter:
    return DeadLetter(
        family="", route="", org_id="", reason=reason, received_at=received_at, source="worker",
        payload=msgspec.Raw(msgspec.json.encode(value.decode("utf-8", "replace"))),
    )  # fmt: skip


def split(items: list[Routed], letters: list[DeadLetter]) -> list[bytes]:
    """Items as keyed records of at most ``MAX_RECORD_BYTES``; an item larger than that alone is
    a dead letter (it could never be produced)."""
    whole = routed_encoder.encode(items)
    if len(whole) <= MAX_RECORD_BYTES:
        return [whole]
    if len(items) == 1:
        letters.append(letter(items[0].event, f"event too large after normalizing ({len(whole)} bytes)"))
        return []
    middle = len(items) // 2
    return split(items[:middle], letters) + split(items[middle:], letters)


class Decoded(NamedTuple):
    """A record decoded (``KeyedStage.prepare``): a raw batch's dead letters, canonical events and
    counts by (family, outcome); or a keyed record's items."""

    letters: list[DeadLetter]
    events: list[CanonicalEvent]
    items: list[Routed]
    normalized: Counter[tuple[str, str]]


def decode_raw(value: bytes) -> Decoded:
    """One raw record → its canonical events, and dead letters for the rest."""
    try:
        batch = raw_batch_decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Decoded([_undecodable(value, f"undecodable raw record: {exc}", time.time())], [], [],
                       Counter({("", "undecodable"): 1}))  # fmt: skip
    letters: list[DeadLetter] = []
    canonical: list[CanonicalEvent] = []
    for item in normalize(batch):
        if isinstance(item, Invalid):
            letters.append(DeadLetter(
                family=batch.family, route=batch.route, org_id=batch.org_id, reason=item.reason,
                received_at=batch.received_at, payload=item.payload, source="worker", index=item.index,
                project_id=batch.project_id, env=batch.env, batch=batch.batch,
                id=f"normalize:{batch.org_id}:{batch.body_digest}:{item.index}",
            ))  # fmt: skip
        else:
            canonical.append(item)
    counts: Counter[tuple[str, str]] = Counter(
        {(batch.family, "invalid"): len(letters), (batch.family, "in"): len(canonical)}
    )
    return Decoded(letters, canonical, [], counts)
