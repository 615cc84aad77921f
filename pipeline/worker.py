"""The Faust worker: two stages and a dead-letter loader.

1. ``normalize`` (raw topic → keyed topic): each raw batch becomes canonical events, re-keyed by
   ``org:unit`` (and ``org:user``, ``org:company``) so that all state is local to a partition;
   invalid events go to the dead-letter topic with their reason.
2. ``keyed`` (keyed topic → warehouse): dedupe, users and companies, experiment attribution and
   rollups (``pipeline.processor``), then the rows (``pipeline.sink``).
3. ``dead_letters`` (DLQ topic → ``dlq`` table), for ``sluice dlq list`` and ``replay``.

Delivery: at least once between stages (Faust flushes its producer before it commits offsets;
``take_events`` acks a batch only after the body handled it), and effectively once into
ClickHouse by the processor's fences, dedupe and idempotent state — the state kept by
``pipeline.statestore`` (local RocksDB + a compacted changelog), durable before any row.

The web port serves ``/healthz``, ``/metrics`` and, for the embedded warehouse that only this
process may open, ``POST /query`` (SQL in the body, ``?format=tsv|json``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import faust
import msgspec
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from pipeline.canonical import CanonicalEvent
from pipeline.metrics import WorkerMetrics
from pipeline.normalize import Invalid, normalize
from pipeline.processor import Incoming, Processor, Stores
from pipeline.records import by_partition
from pipeline.records import decoder as routed_decoder
from pipeline.records import encoder as routed_encoder
from pipeline.sink import WarehouseSink
from pipeline.state import CompanyState, Seen, UnitState, UserState
from pipeline.statestore import SeenPruner, StateStore
from pipeline.warehouse import Warehouse, WarehouseError, open_warehouse
from sluice.envelope import DeadLetter, encoder, raw_batch_decoder
from sluice.settings import Settings

log = logging.getLogger("sluice.worker")

QUERY_FORMATS = {"tsv": "TSVWithNames", "json": "JSONEachRow"}
CLICKHOUSE_FORMATS = {"TSV", "TSVWithNames", "JSONEachRow", "JSON", "CSV", "CSVWithNames", "Pretty"}


def output_format(name: str) -> str | None:
    """``tsv``/``json`` (the CLI's names) or a ClickHouse output format from a short list."""
    return QUERY_FORMATS.get(name) or (name if name in CLICKHOUSE_FORMATS else None)


T = TypeVar("T")


class KindStore(Generic[T]):
    """One kind of state (a prefix of the store's keys) as msgspec structs."""

    def __init__(self, state: StateStore, prefix: str, kind: type[T]) -> None:
        self.state = state
        self.prefix = prefix.encode() + b"\x00"
        self.decoder = msgspec.json.Decoder(kind)

    def get(self, key: str) -> T | None:
        value = self.state.get(self.prefix + key.encode())
        return None if value is None else self.decoder.decode(value)

    def set(self, key: str, value: T) -> None:
        self.state.put(self.prefix + key.encode(), encoder.encode(value))


def build_app(settings: Settings, warehouse_factory: Callable[[Settings], Warehouse] = open_warehouse) -> faust.App:
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.worker_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",  # no Faust tables: state is pipeline.statestore's
        datadir=str(settings.worker_data_dir),
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        web_bind=settings.worker_host,
        topic_partitions=settings.raw_partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # A crashed worker's partitions move after this long; Faust's default (60 s) is an outage.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        table_standby_replicas=0,
        key_serializer="raw",
        value_serializer="raw",
    )
    raw = app.topic(settings.raw_topic, value_serializer="raw", key_serializer="raw")
    keyed = app.topic(settings.keyed_topic, value_serializer="raw", key_serializer="raw")
    dlq = app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw")
    warehouse = warehouse_factory(settings)
    sink = WarehouseSink(warehouse)
    metrics = WorkerMetrics()

    state = StateStore(settings.worker_data_dir / "state", settings.state_topic, settings.kafka_bootstrap)
    pruner = SeenPruner(state, b"seen\x00", settings.dedupe_window_days * 86400.0)
    stores = Stores(
        seen=KindStore(state, "seen", Seen),
        units=KindStore(state, "unit", UnitState),
        users=KindStore(state, "user", UserState),
        companies=KindStore(state, "company", CompanyState),
    )
    processor = Processor(stores, settings.keyed_topic, settings.dedupe_window_days * 86400.0, settings.value_property)
    fences_stale = [True]

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        fences_stale[0] = True  # another worker may have counted these partitions meanwhile

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Sent once the agents have finished what they held: from now on another worker may
        # change these partitions' state, so catch up from the changelog before using them again.
        revoked = args[0] if args else kwargs.get("revoked", set())
        state.revoke({tp.partition for tp in revoked if tp.topic == settings.keyed_topic})

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await state.stop()

    @app.agent(raw)
    async def normalize_stage(stream: Any) -> None:
        async for event in stream.events():
            metrics.position(event.message.tp, event.message.offset)
            letters, canonical = _normalize(event.value, metrics)
            for letter in letters:
                await dlq.send(value=letter)
            for partition, items in by_partition(canonical, settings.raw_partitions).items():
                await keyed.send(value=routed_encoder.encode(items), partition=partition)

    def changelog_to(partition: int) -> None:
        state.partition = partition  # each key's changelog record goes to the key's partition

    @app.agent(keyed)
    async def keyed_stage(stream: Any) -> None:
        # A keyed record carries the items of one raw batch for one partition (tens of events);
        # take about sink_batch_rows events' worth of them.
        records_per_batch = max(10, settings.sink_batch_rows // 10)
        async for events in stream.take_events(records_per_batch, within=settings.sink_batch_seconds):
            if fences_stale[0]:
                processor.fences = await sink.fences(settings.keyed_topic)
                fences_stale[0] = False
            stale = {event.message.partition for event in events} - state.ready
            if stale:
                await state.recover(stale)
            metrics.pruned.inc(pruner.step())  # before the batch: see SeenPruner
            writes = processor.begin()
            for event in events:
                partition, offset = event.message.partition, event.message.offset
                for index, item in enumerate(routed_decoder.decode(event.value)):
                    processor.process_one(Incoming(partition, offset, item, index), writes)
                metrics.position(event.message.tp, offset)
            processor.save_state(changelog_to)
            processor.finish(writes)
            # State changes must be durable before any row is: a replay then finds the state that
            # matches the rows (see pipeline.processor).
            await state.commit()
            started = time.perf_counter()
            written = await sink.write(writes)
            processor.advance_fences(writes)
            metrics.sunk(writes, written, time.perf_counter() - started, time.time())

    @app.agent(dlq)
    async def dead_letter_stage(stream: Any) -> None:
        async for events in stream.take_events(1000, within=settings.sink_batch_seconds):
            rows = [_dlq_row(e.message.topic, e.message.partition, e.message.offset, e.value) for e in events]
            await sink.insert("dlq", encoder.encode([r for r in rows if r is not None]))

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            metrics.update_lag(app.consumer)
            return self.bytes(generate_latest(metrics.registry), content_type="text/plain; version=0.0.4")

    @app.page("/query")
    class Query(View):
        async def post(self, request: Request) -> Response:
            fmt = output_format(request.query.get("format", "tsv"))
            if fmt is None:
                return self.text("unsupported format\n", status=400)
            sql = await request.text()
            try:
                out = await asyncio.to_thread(warehouse.execute, sql, fmt)
            except WarehouseError as exc:
                return self.text(str(exc) + "\n", status=400)
            return self.bytes(out, content_type="text/plain")

    return app


def _normalize(value: bytes, metrics: WorkerMetrics) -> tuple[list[bytes], list[CanonicalEvent]]:
    """One raw record → its canonical events, and dead letters already encoded for the DLQ."""
    try:
        batch = raw_batch_decoder.decode(value)
    except msgspec.DecodeError as exc:
        metrics.events.labels("normalize", "invalid", "", "undecodable").inc()
        as_text = msgspec.Raw(msgspec.json.encode(value.decode("utf-8", "replace")))
        letter = DeadLetter(
            family="", route="", org_id="", reason=f"undecodable raw record: {exc}",
            received_at=time.time(), payload=as_text, source="worker",
        )  # fmt: skip
        return [encoder.encode(letter)], []
    letters: list[bytes] = []
    canonical: list[CanonicalEvent] = []
    for item in normalize(batch):
        if isinstance(item, Invalid):
            letters.append(encoder.encode(DeadLetter(
                family=batch.family, route=batch.route, org_id=batch.org_id, reason=item.reason,
                received_at=batch.received_at, payload=item.payload, source="worker", index=item.index,
                project_id=batch.project_id, env=batch.env, batch=batch.batch,
            )))  # fmt: skip
        else:
            canonical.append(item)
    if letters:
        metrics.events.labels("normalize", "invalid", batch.family, "invalid").inc(len(letters))
    metrics.events.labels("normalize", "in", batch.family, "").inc(len(canonical))
    return letters, canonical


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
    try:
        letter = _letter_decoder.decode(value)
    except msgspec.DecodeError:
        log.warning("skipping an undecodable dead letter at %s:%s:%s", topic, partition, offset)
        return None
    return DlqRow(
        f"{topic}:{partition}:{offset}", letter.org_id, letter.family, letter.route, letter.source, letter.reason,
        bytes(letter.payload).decode(), letter.index, datetime.fromtimestamp(letter.received_at, UTC),
        letter.project_id, letter.env, encoder.encode(letter.batch).decode(),
    )  # fmt: skip


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGINT/SIGTERM (Faust's own signal handling stops it cleanly)."""
    from faust.worker import Worker

    app = build_app(settings)
    Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()
