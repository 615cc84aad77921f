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
which also provides the group membership and the transactions. The web port serves
``/healthz``, ``/metrics`` and, for the embedded warehouse only this process may open,
``POST /query``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import generate_latest

from pipeline.background import keep_background_low
from pipeline.batch import stores_on
from pipeline.keyed import Fencing, InFlight, KeyedStage, Record
from pipeline.metrics import WorkerMetrics
from pipeline.processor import Processor
from pipeline.results import web as results_web
from pipeline.retry import retrying
from pipeline.rows import Writes
from pipeline.sink import WarehouseSink
from pipeline.statestore import SeenPruner, StateStore
from pipeline.warehouse import Warehouse, WarehouseError, open_warehouse
from pipeline.warehouse.formats import output_format
from pipeline.warehouse.readonly import authorized, query_token, read_only
from sluice.envelope import DeadLetter, encoder
from sluice.kafkaconf import kafka_security
from sluice.settings import Settings
from sluice.sql import ParameterText

log = logging.getLogger("sluice.worker")

MAX_RECORD_BYTES = 900_000
"""Bytes of one keyed record: under Kafka's default 1 MB message limit, whatever the raw batch."""
FENCED_WAIT = 15.0
"""Seconds a fenced worker leaves the partition alone, waiting to learn of the rebalance."""
MAX_TAKE_BYTES = 8 << 20
"""Bytes of records one step takes: a backlog of raw batches (a hundred events each) must not
become one step of a million events (memory, freshness, and the heartbeats: see
``pipeline.keyed.YIELD_EVERY``)."""
RESTART_PAUSE = 1.0
"""Seconds a stage waits after a failed step before it takes the same records again."""
GC_THRESHOLD = (1_000_000, 20, 1000)
"""The cyclic collector's thresholds in a worker process (Python's are 700, 10, 10). A step
allocates millions of objects that die young and form no cycles; at the default the collector
ran every few hundred events and took a fifth of the worker's CPU (bench/worker_cpu.py: 20.6 →
17.0 µs an event), and at (200,000, 50, 1000) still 7.4 % of the main thread in a worker's
profile: every collection fell in the middle of a batch and scanned the batch's live objects.
Cycles are still collected, every 1,000,000 allocations instead of 700."""


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
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
            max_request_size=4 << 20, max_batch_size=1 << 20, linger_ms=5, **security,
        )  # fmt: skip
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
            self.metrics.dead_letters.labels(letter.source, _reason_kind(letter.reason)).inc()
        await asyncio.gather(*(self._send(self.settings.dlq_topic, _bounded(letter)) for letter in letters))

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
        rows = [
            row for tp, messages in records.items() for m in messages
            if (row := _dlq_row(tp.topic, tp.partition, m.offset, m.value)) is not None
        ]  # fmt: skip
        if rows:
            for row, reason in await self.sink.insert("dlq", rows):
                log.error("the warehouse rejected a dead letter %s: %s", row.id, reason)
                self.metrics.dead_letters.labels("dead_letters", "dropped").inc()
        await self._commit({tp: messages[-1].offset + 1 for tp, messages in records.items()})
        self.metrics.progress.labels("dead_letters").set(time.time())

    # --- web ------------------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/query", self._query)
        results_web.install(app, self.warehouse, self.query_token, self.settings)  # GET /results, /api/v1/experiments
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _metrics(self, request: web.Request) -> web.Response:
        fetched = {}
        for tp in self.consumer.assignment():
            with contextlib.suppress(KafkaError, TimeoutError):  # moving, or being reset: no figure now
                fetched[tp] = await asyncio.wait_for(self.consumer.position(tp), 1.0)
        self.metrics.update_lag(self.consumer, fetched, transactional={self.settings.keyed_topic})
        return web.Response(body=generate_latest(self.metrics.registry), content_type="text/plain")

    async def _query(self, request: web.Request) -> web.Response:
        """Read-only SQL on the embedded warehouse (``pipeline.warehouse.readonly``), for the
        holder of the query token, never from a browser, and not at all with a server."""
        if self.settings.clickhouse_url:
            return web.Response(text="no SQL here: query the ClickHouse server with your own user\n", status=404)
        if "Origin" in request.headers:
            return web.Response(text="browsers may not query the warehouse\n", status=403)
        if not authorized(request.headers.get("Authorization", ""), self.query_token):
            return web.Response(text="a valid query token is required (Authorization: Bearer …)\n", status=401)
        fmt = output_format(request.query.get("format", "tsv"))
        if fmt is None:
            return web.Response(text="unsupported format\n", status=400)
        try:
            sql = await request.text()
            parameters = {
                k.removeprefix("param_"): ParameterText(v) for k, v in request.query.items() if k.startswith("param_")
            }
            out = await asyncio.to_thread(
                read_only, self.warehouse, sql, fmt, self.settings.query_time_limit, parameters
            )
        except (WarehouseError, UnicodeDecodeError) as exc:
            return web.Response(text=str(exc) + "\n", status=400)
        return web.Response(body=out, content_type="text/plain")


class Tail(NamedTuple):
    """The last batch, its write and commit in flight (``Worker._keyed``)."""

    batch: InFlight
    records: dict[TopicPartition, list[Any]]
    started: float

    @property
    def done(self) -> bool:
        """Its write and commit have ended (their outcome is taken by ``Worker._settle``)."""
        return self.batch.task.done()


class Intake:
    """The consumer's records, a step's worth at a time (``take``)."""

    def __init__(self, consumer: AIOKafkaConsumer, rows: int, period: float, stopping: asyncio.Event) -> None:
        self.consumer = consumer
        self.rows = rows
        """Records a step takes at most (``sink_batch_rows``)."""
        self.period = period
        """Seconds between steps under a live load (``sink_batch_seconds``)."""
        self.stopping = stopping
        self.taken_at = 0.0
        """When the last step's records were taken."""

    async def take(self) -> dict[TopicPartition, list[Any]]:
        """The records for the next step: up to ``rows`` records or ``MAX_TAKE_BYTES``,
        and under a live load what arrives until ``period`` after the last step was
        taken (or at once, if that has passed); with nothing to take, whatever comes within
        ``period``. Batches size themselves: under a backlog a step takes the most it
        may; under a live load steps come at most once per ``period``, so their
        fixed costs — a transaction per partition, an insert per table, the parts ClickHouse
        then merges — stay per period, not per request, and freshness stays within a period of
        the step's own time."""
        now = time.monotonic()
        fill_until = self.taken_at + self.period
        idle_until = now + self.period
        taken: dict[TopicPartition, list[Any]] = defaultdict(list)
        count = size = 0
        while not self.stopping.is_set():
            if count >= self.rows or size >= MAX_TAKE_BYTES:
                break
            until = fill_until if count else idle_until
            wait = max(0.0, until - time.monotonic())
            fetched = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=2000)
            if not fetched and (count or wait == 0):
                break  # the period is over and the consumer holds nothing more: go
            for tp, messages in fetched.items():
                if taken[tp] and messages and messages[0].offset <= taken[tp][-1].offset:
                    # The position moved back (a rebalance reset it to the committed offset): the
                    # records taken so far come again; a batch must never hold a record twice.
                    count -= len(taken[tp])
                    size -= sum(len(m.value or b"") for m in taken[tp])
                    taken[tp] = []
                taken[tp] += messages
                count += len(messages)
                size += sum(len(m.value or b"") for m in messages)
        self.taken_at = time.monotonic()
        return taken


def group_consumer(settings: Settings, security: dict[str, Any]) -> AIOKafkaConsumer:
    """The worker's member of its consumer group (subscribed by ``Worker.run``)."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.worker_group,
        enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
        # A stopped worker's partitions move after this long (the default, 45 s, is an outage).
        session_timeout_ms=10_000, heartbeat_interval_ms=2_000, max_poll_interval_ms=600_000,
        # Raw p and keyed p to one member. One assignor only: aiokafka (0.14) sends a JoinGroup per
        # assignor it is given, the second with changed metadata, and a member that rejoins with
        # changed metadata starts another rebalance: a group of several members can rebalance
        # for minutes without assigning anything.
        partition_assignment_strategy=(RangePartitionAssignor,),
        max_partition_fetch_bytes=4 << 20, fetch_max_bytes=32 << 20, **security,
    )  # fmt: skip


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


LETTER_PAYLOAD_CUT = 64 << 10


def _bounded(letter: DeadLetter) -> bytes:
    """A letter as a record under ``MAX_RECORD_BYTES`` (Kafka's default message limit): a larger
    payload is kept as the text of its first 64 KiB, and the reason says so."""
    encoded = encoder.encode(letter)
    if len(encoded) <= MAX_RECORD_BYTES:
        return encoded
    text = bytes(letter.payload)[:LETTER_PAYLOAD_CUT].decode("utf-8", "replace")
    cut = msgspec.structs.replace(
        letter, payload=msgspec.Raw(msgspec.json.encode(text)), batch={},
        reason=f"{letter.reason} (payload of {len(bytes(letter.payload)):,} bytes cut to its first 64 KiB)",
    )  # fmt: skip
    return encoder.encode(cut)


def _reason_kind(reason: str) -> str:
    """A dead letter's reason as a small label set for the metric."""
    for prefix, kind in (("undecodable", "undecodable"), ("worker could not", "error"),
                         ("warehouse rejected", "rejected"), ("event too large", "too_large")):  # fmt: skip
        if reason.startswith(prefix):
            return kind
    return "invalid"


class DlqRow(msgspec.Struct):
    id: str
    org_id: str
    family: str
    route: str
    source: str
    reason: str
    payload: str
    event_index: int | None
    received_at: datetime
    project_id: str
    env: str
    batch: str


_letter_decoder = msgspec.json.Decoder(DeadLetter)


def _dlq_row(topic: str, partition: int, offset: int, value: bytes) -> DlqRow | None:
    """A letter as its ``dlq`` row; bytes that are not UTF-8 are replaced, never a reason to fail."""
    try:
        letter = _letter_decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        try:
            letter = _letter_decoder.decode(value.decode("utf-8", "replace").encode())
        except (msgspec.DecodeError, UnicodeDecodeError):
            log.warning("skipping an undecodable dead letter at %s:%s:%s", topic, partition, offset)
            return None
    try:
        received = datetime.fromtimestamp(letter.received_at, UTC)
    except (OverflowError, ValueError, OSError):
        received = datetime.fromtimestamp(0, UTC)
    return DlqRow(
        letter.id or f"{topic}:{partition}:{offset}", letter.org_id, letter.family, letter.route, letter.source,
        letter.reason, bytes(letter.payload).decode("utf-8", "replace"), letter.index, received,
        letter.project_id, letter.env, encoder.encode(letter.batch).decode("utf-8", "replace"),
    )  # fmt: skip


async def serve(settings: Settings, warehouse: Warehouse | None = None) -> None:
    """Run one worker until SIGINT/SIGTERM; the batch in hand commits before it leaves the group."""
    from sluice.topics import ensure_topics

    await ensure_topics(settings)
    if warehouse is None:
        warehouse = await asyncio.to_thread(open_warehouse, settings)
    worker = Worker(settings, warehouse)
    runner = web.AppRunner(worker.web_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.worker_host, settings.worker_port).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stopping.set)
    try:
        await worker.run()
    finally:
        await runner.cleanup()


def run_worker_processes(settings: Settings, count: int) -> None:
    """``count`` workers, each a member of the group with its own state directory
    (``{home}/worker-N``) and web port (``worker_port + N``); SIGTERM/SIGINT go to all of them,
    and this returns once every one has committed and left the group."""
    from sluice.children import supervise

    shares = [
        msgspec.structs.replace(
            settings,
            home=f"{settings.home}/worker-{n}",
            worker_port=settings.worker_port + n,
            query_token=settings.query_token or "unused: a server is configured",
        )
        for n in range(count)
    ]
    supervise(run_worker, [(share,) for share in shares], "worker")


def run_worker(settings: Settings) -> None:
    from sluice.logs import configure_logging

    configure_logging(settings.log_level)
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()  # what start-up made lives as long as the process: never scan it again
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
