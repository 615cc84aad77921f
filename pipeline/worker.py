"""The Faust worker: raw batches from Kafka → canonical events → the warehouse.

Delivery: at least once from Kafka, effectively once in ClickHouse. The agent writes a batch to
the warehouse before it asks for the next one, and Faust commits an offset only for records the
agent has moved past; a crash between the write and the commit replays those records, which
rewrite the same rows (same ``(org_id, message_id)``), merged away by ReplacingMergeTree and
invisible to ``FINAL`` reads.

The worker's web port serves ``/healthz``, ``/metrics`` and, for the embedded warehouse that only
this process may open, ``POST /query`` (SQL in the body, ``?format=`` a ClickHouse format).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust
import msgspec
from faust.web import Request, Response, View

from pipeline.canonical import CanonicalEvent, to_rows
from pipeline.normalize import Invalid, normalize
from pipeline.warehouse import Warehouse, WarehouseError, WarehouseUnavailable, open_warehouse
from sluice.envelope import DeadLetter, encoder, raw_batch_decoder
from sluice.settings import Settings

log = logging.getLogger("sluice.worker")

QUERY_FORMATS = {"tsv": "TSVWithNames", "json": "JSONEachRow"}


class EventSink:
    """Writes canonical events to ``events``; blocks (backpressure) while the warehouse is down."""

    def __init__(self, warehouse: Warehouse, retry_seconds: float = 1.0) -> None:
        self.warehouse = warehouse
        self.retry_seconds = retry_seconds

    async def write(self, events: list[CanonicalEvent]) -> None:
        if not events:
            return
        rows = to_rows(events)
        while True:
            try:
                await asyncio.to_thread(self.warehouse.insert_json, "events", rows)
                return
            except WarehouseUnavailable as exc:
                log.warning("warehouse unavailable, retrying: %s", exc)
                await asyncio.sleep(self.retry_seconds)


def build_app(settings: Settings, warehouse_factory: Callable[[Settings], Warehouse] = open_warehouse) -> faust.App:
    app = faust.App(
        settings.worker_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        web_bind=settings.worker_host,
        topic_partitions=settings.raw_partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
    )
    raw = app.topic(settings.raw_topic, value_serializer="raw", key_serializer="raw")
    dlq = app.topic(settings.dlq_topic, value_serializer="raw", key_serializer="raw")
    warehouse = warehouse_factory(settings)
    sink = EventSink(warehouse)

    @app.agent(raw)
    async def ingest(stream: Any) -> None:
        async for values in stream.take(1000, within=settings.sink_batch_seconds):
            events: list[CanonicalEvent] = []
            for value in values:
                for item in _process(value):
                    if isinstance(item, CanonicalEvent):
                        events.append(item)
                    else:
                        await dlq.send(key=None, value=item)
            await sink.write(events)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/query")
    class Query(View):
        async def post(self, request: Request) -> Response:
            fmt = QUERY_FORMATS.get(request.query.get("format", "tsv"), "TSVWithNames")
            sql = await request.text()
            try:
                out = await asyncio.to_thread(warehouse.execute, sql, fmt)
            except WarehouseError as exc:
                return self.text(str(exc) + "\n", status=400)
            return self.bytes(out, content_type="text/plain")

    return app


def _process(value: bytes) -> list[CanonicalEvent | bytes]:
    """Normalize one raw record; dead letters come back already encoded for the DLQ topic."""
    try:
        batch = raw_batch_decoder.decode(value)
    except msgspec.DecodeError as exc:
        as_text = msgspec.Raw(msgspec.json.encode(value.decode("utf-8", "replace")))
        letter = DeadLetter(
            family="", route="", org_id="", reason=f"undecodable raw record: {exc}",
            received_at=time.time(), payload=as_text, source="worker",
        )  # fmt: skip
        return [encoder.encode(letter)]
    out: list[CanonicalEvent | bytes] = []
    for item in normalize(batch):
        if isinstance(item, Invalid):
            letter = DeadLetter(
                family=batch.family, route=batch.route, org_id=batch.org_id, reason=item.reason,
                received_at=batch.received_at, payload=item.payload, source="worker", index=item.index,
            )  # fmt: skip
            out.append(encoder.encode(letter))
        else:
            out.append(item)
    return out


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGINT/SIGTERM (Faust's own signal handling stops it cleanly)."""
    from faust.worker import Worker

    app = build_app(settings)
    Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()
