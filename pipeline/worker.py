"""The worker: one consumer-group member running two stages in one loop, and a small web port.

1. ``keyed`` (raw and keyed topics → warehouse, ``pipeline.keyed``): each raw batch becomes
   canonical events (invalid ones go to the dead-letter topic with their reason); the events of
   this partition's units — a batch lands in the partition of its first event's unit — are
   deduplicated, attributed and rolled up here, and every other item is forwarded to its own
   partition through the keyed topic. State, forwarded items and consumed offsets are committed
   per partition in fenced Kafka transactions. Partition p of the raw topic and of the keyed
   topic are one unit of work (the range assignor gives both to the same member). A batch's
   write and commit run while the next batch is decoded (``Worker._keyed``).
2. ``dead_letters`` (DLQ topic → ``dlq`` table), for ``sluice dlq list`` and ``replay``.

**No input stops a stage.** An event, record or row that fails anywhere becomes a dead letter
with its reason and the stage goes on; a failure of a whole step (a bug, an outage the step did
not expect) is logged and counted as a stage restart, its records are not committed, and they
are processed again after a pause.

Why not Faust: measured (docs/architecture.md), its ``exactly_once`` commits on a timer
regardless of event boundaries (a paused worker's run gave 4,004 outputs for 4,000 inputs) and
picks its transactional producer by destination partition, so re-keying to a partition the
worker does not own fails; and its per-event stream machinery was a quarter of the worker's
time. Why one hop: the second (normalize → keyed topic → keyed stage) cost every event an
encode, a produce, a fetch and a decode. The stages here take batches straight from aiokafka,
which also provides the group membership and the transactions.

This module is the loop and the ownership of partitions (fencing, catching up, letting go). Its
neighbours: ``pipeline.intake`` (the consumer and a step's records), ``pipeline.keyed`` (the
batch body), ``pipeline.deadletters`` (letters as records and as ``dlq`` rows),
``pipeline.webport`` (health, metrics, the analysts' SQL and results) and ``pipeline.process``
(the process entry points).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, NamedTuple

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from pipeline.background import keep_background_low
from pipeline.batch import stores_on
from pipeline.deadletters import bounded, land, reason_kind
from pipeline.intake import Intake, group_consumer
from pipeline.keyed import Fencing, InFlight, KeyedStage, Record
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.pruner import SeenPruner
from pipeline.rows import Writes
from pipeline.sink import WarehouseSink
from pipeline.statestore import StateStore
from pipeline.warehouse import Warehouse
from pipeline.warehouse.readonly import query_token
from sluice.envelope import RAW_RECORD_BYTES, DeadLetter
from sluice.kafkaconf import durable_producer, kafka_security
from sluice.retry import retrying
from sluice.settings import Settings

log = logging.getLogger("sluice.worker")

FENCED_WAIT = 15.0
"""Seconds a fenced worker leaves the partition alone, waiting to learn of the rebalance."""
RESTART_PAUSE = 1.0
"""Seconds a stage waits after a failed step before it takes the same records again."""


class Worker:
    def __init__(self, settings: Settings, warehouse: Warehouse) -> None:
        self.settings = settings
        self.warehouse = warehouse
        self.metrics = WorkerMetrics()
        self.sink = WarehouseSink(warehouse)
        settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
        security = kafka_security(settings)
        self.state = StateStore(
            settings.worker_data_dir / "state", settings.state_topic, settings.kafka_bootstrap, security
        )  # fmt: skip
        self.pruner = SeenPruner(self.state, b"seen\x00", settings.dedupe_window_days * 86400.0)
        stores = stores_on(self.state, lambda cap: self.metrics.capped.labels(cap).inc())
        processor = Processor(stores, settings.keyed_topic, settings.dedupe_window_days * 86400.0,
                              settings.value_property, settings.raw_topic)  # fmt: skip
        self.fencing = Fencing(settings.kafka_bootstrap, settings.worker_group, security)
        self.keyed = KeyedStage(self.state, processor, self.sink, self.fencing, settings.keyed_topic, self.send_letters,
                                settings.raw_topic, settings.raw_partitions)  # fmt: skip
        self.consumer = group_consumer(settings, security)
        self.producer = durable_producer(
            settings.kafka_bootstrap, security, max_request_size=RAW_RECORD_BYTES, max_batch_size=1 << 20, linger_ms=5
        )
        self.lock = asyncio.Lock()
        """Held while a batch is in hand: a revocation waits for it (the batch commits first)."""
        self.owned: set[int] = set()
        """Partitions fenced and caught up by this worker since assigned."""
        self.positioned: set[TopicPartition] = set()
        """Raw and keyed partitions of owned partitions, positioned at their committed offsets."""
        self.positioned_topics = (settings.raw_topic, settings.keyed_topic)
        self.split_warned: set[int] = set()
        """Raw partitions assigned without their keyed twin, warned about (once per assignment)."""
        self.fenced_until: dict[int, float] = {}
        """Keyed partitions whose producer was fenced: not taken back before then, unless assigned."""
        self.tail: Tail | None = None
        """The last batch's write and commit, in flight while the next batch is decoded."""
        self.retake: dict[int, dict[TopicPartition, int]] = {}
        """Partitions let go after a failed commit (``_settle``), each with the offsets its topic
        partitions are fetched again from: records of them in hand are not processed."""
        self.stopping = asyncio.Event()
        self.intake = Intake(self.consumer, settings.sink_batch_rows, settings.sink_batch_seconds, self.stopping)
        self.query_token = query_token(settings.query_token, settings.home, create=not settings.clickhouse_url)

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.producer.start()
        listener = _Rebalance(self)
        self.consumer.subscribe([self.settings.raw_topic, self.settings.keyed_topic, self.settings.dlq_topic],
                                listener=listener)  # fmt: skip
        await self.consumer.start()
        background = asyncio.create_task(keep_background_low(self.stopping))
        try:
            while not self.stopping.is_set():
                records = await self.intake.take()
                async with self.lock:
                    if self.retake or (self.tail is not None and (self.tail.done or not any(records.values()))):
                        records = await self._settled(records)  # its outcome and figures, not left for later
                    await self._step(records)
            async with self.lock:
                await self._settle()  # the last batch commits before this worker leaves the group
        finally:
            background.cancel()
            if self.tail is not None:  # stopped midway: whatever it did not commit goes again
                tail, self.tail = self.tail, None
                await tail.batch.cancel()
            await self.consumer.stop()
            await self.fencing.close()
            await self.producer.stop()
            await self.state.stop()

    async def _step(self, records: dict[TopicPartition, list[Any]]) -> None:
        assigned = self.consumer.assignment()
        keyed: dict[TopicPartition, list[Any]] = {}
        letters: dict[TopicPartition, list[Any]] = {}
        for tp, messages in records.items():
            if tp in assigned and messages:
                (letters if tp.topic == self.settings.dlq_topic else keyed)[tp] = messages
        for name, taken, stage in (("keyed", keyed, self._keyed), ("dead_letters", letters, self._dead_letters)):
            if not taken:
                continue
            try:
                await stage(taken)  # each stage moves its progress gauge when its records are committed
            except Exception:  # the step failed as a whole: take its records again, after a pause
                log.exception("the %s stage failed; it goes on with the same records", name)
                self.metrics.restarts.labels(name).inc()
                await self._rewind(taken)
                await asyncio.sleep(RESTART_PAUSE)

    async def _rewind(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Put the consumer back at the first record of each partition (nothing was committed)."""
        records = await self._settled(records)  # the batch before, still committing, first
        lost: set[int] = set()
        for tp, messages in records.items():
            self._seek(tp, messages[0].offset)
            if tp.topic != self.settings.dlq_topic:
                lost.add(tp.partition)
        for partition in lost:
            await self._lose(partition)

    async def _send(self, topic: str, value: bytes, partition: int | None = None) -> None:
        async def send() -> None:
            await self.producer.send_and_wait(topic, value, partition=partition)

        await retrying(f"producing to {topic}", send, (KafkaError,))

    async def send_letters(self, letters: list[DeadLetter]) -> None:
        """Produce dead letters (acknowledged) and count them by stage and reason."""
        for letter in letters:
            self.metrics.dead_letters.labels(letter.source, reason_kind(letter.reason)).inc()
        await asyncio.gather(*(self._send(self.settings.dlq_topic, bounded(letter)) for letter in letters))

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit consumed offsets of the dead-letter stage (at least once: the ``dlq`` table keeps
        one row per letter id); a partition that moved meanwhile is the new owner's to replay."""
        try:
            await asyncio.wait_for(self.consumer.commit(offsets), timeout=30)
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            log.info("offsets not committed (the partitions moved?): %s", exc)

    # --- keyed ----------------------------------------------------------------------------------

    async def _keyed(self, records: dict[TopicPartition, list[Any]]) -> None:
        """A batch of the keyed stage, overlapping the write and commit of the batch before it
        (``self.tail``):

        1. decode it (``KeyedStage.prepare``: no state);
        2. when each of its partitions is owned and positioned as before (``_steady``), process it
           at once, against the state the batch before it staged (``WriteBack.layers``); else
           wait for that batch first, take its outcome (``_settle``) and make sure of each
           partition (fencing, catching up, positions), then process it;
        3. wait for the batch before it to end, and start its own write and commit.

        A batch commits only after the one before it, and a partition that one lost (its commit
        failed, or it was fenced) is let go in both: what it staged is forgotten, nothing of the
        partition is committed, and its records are taken again from the first of the failed
        batch (``_settled``). So no state is committed that was built on state that was dropped."""
        prepared = await self.keyed.prepare(
            [(tp.topic, tp.partition, m.offset, m.value) for tp, messages in records.items() for m in messages]
        )  # fmt: skip
        if self.tail is None or self.tail.done or not self._steady(records):
            records = await self._settled(records)
        batch: list[Record] = []
        assigned = self.consumer.assignment()
        takeable: list[tuple[TopicPartition, list[Any]]] = []
        # keyed before raw: a partition taken over is positioned for both before either is used
        for tp, messages in sorted(records.items(), key=lambda item: (item[0].topic != self.settings.keyed_topic,
                                                                       item[0].partition)):  # fmt: skip
            partition = tp.partition
            if time.monotonic() < self.fenced_until.get(partition, 0.0):
                # Another worker has it: wait for the rebalance rather than fence it back; the
                # records come again if the partition stays here.
                self._seek(tp, messages[0].offset)
                continue
            if TopicPartition(self.settings.keyed_topic, partition) not in assigned:
                # Partition p of both topics is one unit of work; the range assignor keeps them
                # together. Split (another assignor in the group?): leave the records for now.
                if partition not in self.split_warned:
                    self.split_warned.add(partition)
                    log.warning("raw partition %s is assigned without its keyed partition: left for now", partition)
                self._seek(tp, messages[0].offset)
                continue
            takeable.append((tp, messages))
        await self._take_on({tp.partition for tp, _ in takeable})
        for tp, messages in takeable:
            if await self._own(tp, messages[0].offset):
                batch += [(tp.topic, tp.partition, m.offset, m.value) for m in messages]
        if not batch:
            return
        # before the batch (see SeenPruner), and not an id a batch still committing wrote again
        self.metrics.pruned.inc(self.pruner.step(keep=self.keyed.processor.holds_seen))
        started = time.perf_counter()

        async def before_commit(writes: Writes) -> None:
            nonlocal records
            if self.tail is not None:  # the batch before commits first; what it lost, this one drops
                kept = await self._settled(records)  # and fetches again, from the failed batch's first
                if dropped := {tp.partition for tp in records if tp not in kept}:
                    writes.drop(dropped)
                    records = kept

        in_flight = await self.keyed.start(batch, prepared, before_commit)
        self.tail = Tail(in_flight, records, started)

    def _steady(self, records: dict[TopicPartition, list[Any]]) -> bool:
        """Every partition of ``records`` is owned, positioned and assigned (raw and keyed), none
        is let go or fenced: the batch needs nothing of the batch before it but its state."""
        assigned = self.consumer.assignment()
        now = time.monotonic()
        return not self.retake and all(
            tp.partition in self.owned and tp in self.positioned and tp in assigned
            and TopicPartition(self.settings.keyed_topic, tp.partition) in assigned
            and now >= self.fenced_until.get(tp.partition, 0.0)
            for tp in records
        )  # fmt: skip

    async def _settled(self, records: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """``_settle``, and ``records`` without those of the partitions let go since they were
        fetched (``self.retake``): each such partition is fetched again from the earliest of its
        failed batch's first record and these, and ``_own`` then checks the committed offset."""
        await self._settle()
        if not self.retake:
            return records
        retake, self.retake = self.retake, {}
        kept = {}
        for tp, messages in records.items():
            rewind = None if tp.topic == self.settings.dlq_topic else retake.get(tp.partition)
            if rewind is None:
                kept[tp] = messages
            elif messages:
                self._seek(tp, min(rewind.get(tp, messages[0].offset), messages[0].offset))
        return kept

    async def _settle(self) -> None:
        """Wait for the last batch's write and commit, and take their outcome: the partitions lost,
        or all of the batch's when it failed (a failed step), are let go, fetched again from the
        batch's first records and noted in ``self.retake`` (see ``_settled``)."""
        tail, self.tail = self.tail, None
        if tail is None:
            return
        firsts = {tp: messages[0].offset for tp, messages in tail.records.items()}
        try:
            written, lost = await self.keyed.settle(tail.batch)  # its state released, whatever the outcome
        except Exception:
            log.exception("the keyed stage failed; it goes on with the same records")
            self.metrics.restarts.labels("keyed").inc()
            for partition in {tp.partition for tp in tail.records}:
                await self._let_go(partition, firsts)
            await asyncio.sleep(RESTART_PAUSE)
            return
        for partition, fenced in lost.items():
            await self._let_go(partition, firsts)
            if fenced:
                self.metrics.fenced.inc()
                self.fenced_until[partition] = time.monotonic() + FENCED_WAIT
        if any(tp.partition not in lost for tp in tail.records):  # a batch committed: progress
            self.metrics.progress.labels("keyed").set(time.time())
        self._count(tail, written)

    async def _let_go(self, partition: int, firsts: dict[TopicPartition, int]) -> None:
        """``_lose`` a partition of a failed batch, which is fetched again from its first records;
        a failure to let go is logged (the partition is fenced again before its next use)."""
        rewind = {tp: offset for tp, offset in firsts.items() if tp.partition == partition}
        self.retake.setdefault(partition, {}).update(rewind)
        try:
            await self._lose(partition, rewind=rewind)
        except Exception:
            log.exception("letting partition %s go failed", partition)

    def _count(self, tail: Tail, written: dict[str, int]) -> None:
        for tp, messages in tail.records.items():
            self.metrics.position(tp, messages[-1].offset)
        writes = tail.batch.writes
        for cap, count in writes.capped.items():
            self.metrics.capped.labels(cap).inc(count)
        for (family, outcome), count in writes.normalized.items():
            if count:
                self.metrics.events.labels("normalize", outcome, family, "" if outcome == "in" else outcome).inc(count)
        self.metrics.sunk(writes, written, time.perf_counter() - tail.started, time.time())

    async def _take_on(self, partitions: set[int]) -> None:
        """Fence the earlier owners of the partitions not owned yet, and catch their state up,
        all at once: one after another, a worker taking on six partitions spent seconds of its
        start on round trips. ``_own`` then finds them ready (and lets go of one that moved away
        meanwhile)."""
        fresh = sorted(partitions - self.owned)
        if not fresh:
            return
        outcomes = await asyncio.gather(*(self.fencing.acquire(p) for p in fresh), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the step fails: its partitions are let go, their records taken again
        stale = {p for p in fresh if p not in self.state.ready}
        if stale:
            await self.state.recover(stale)

    async def _own(self, tp: TopicPartition, first_offset: int) -> bool:
        """Make sure this worker may process ``tp``: fence earlier owners of its partition, catch
        the state up, and start from the committed offset. False when these records are not the
        ones to take now."""
        partition = tp.partition
        if partition not in self.owned:
            if tp not in self.consumer.assignment():  # moved away meanwhile (a rebalance): not ours
                await self._lose(partition)  # let go of what _take_on fenced and caught up for it
                return False
            await self._take_on({partition})  # a no-op when this step's _take_on did it
            self.owned.add(partition)
            self.positioned -= {TopicPartition(t, partition) for t in self.positioned_topics}
        if tp in self.positioned:
            return True
        committed = await asyncio.wait_for(self.consumer.committed(tp), timeout=30)
        start = committed if committed is not None else (await self.consumer.beginning_offsets([tp]))[tp]
        if tp not in self.consumer.assignment():
            await self._lose(partition)
            return False
        self.positioned.add(tp)
        log.info("took %s: committed %s, fetched from %s", tp, start, first_offset)
        if start != first_offset:
            self._seek(tp, start)
            return False
        return True

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next, if it is still assigned here."""
        if tp in self.consumer.assignment():
            with contextlib.suppress(KafkaError):  # IllegalStateError: the assignment just changed
                self.consumer.seek(tp, offset)

    async def _lose(self, partition: int, rewind: dict[TopicPartition, int] | None = None) -> None:
        """Stop treating ``partition`` as ours (it is fenced and caught up again before its next
        use); with ``rewind``, its dropped records are fetched again if it stays assigned."""
        for tp, offset in (rewind or {}).items():
            self._seek(tp, offset)
        if partition in self.owned:
            log.info("let partition %s go", partition)
        self.owned.discard(partition)
        self.positioned -= {TopicPartition(t, partition) for t in self.positioned_topics}
        self.state.discard(partition)
        self.state.revoke({partition})
        await self.fencing.release(partition)
        self.keyed.processor.discard_state(partition)

    # --- dead letters ---------------------------------------------------------------------------

    async def _dead_letters(self, records: dict[TopicPartition, list[Any]]) -> None:
        await land(self.sink, self.metrics, records)
        await self._commit({tp: messages[-1].offset + 1 for tp, messages in records.items()})
        self.metrics.progress.labels("dead_letters").set(time.time())


class Tail(NamedTuple):
    """The last batch, its write and commit in flight (``Worker._keyed``)."""

    batch: InFlight
    records: dict[TopicPartition, list[Any]]
    started: float

    @property
    def done(self) -> bool:
        """Its write and commit have ended (their outcome is taken by ``Worker._settle``)."""
        return self.batch.task.done()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # The batch in hand commits (or fails) first; from then on another worker may own these
        # partitions, so this one fences and catches up again before it takes them back.
        async with self.worker.lock:
            await self.worker._settle()
            for partition in sorted({tp.partition for tp in revoked if tp.topic != self.worker.settings.dlq_topic}):
                if partition in self.worker.owned:
                    await self.worker._lose(partition)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self.worker.fenced_until.pop(tp.partition, None)
        self.worker.split_warned.clear()
        log.info("assigned", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)})
