"""Dead letters in the worker: a letter as a record Kafka takes (``bounded``), the label of its
reason (``reason_kind``), and its row in the ``dlq`` table (``DlqRow``, the one row type: the
worker writes it, ``sluice dlq`` reads it), and the stage that lands the dead-letter topic in
that table (``land``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import TopicPartition

from pipeline.metrics import WorkerMetrics
from pipeline.sink import WarehouseSink
from sluice.envelope import MAX_RECORD_BYTES, DeadLetter, encoder

log = logging.getLogger("sluice.worker")


LETTER_PAYLOAD_CUT = 64 << 10


def bounded(letter: DeadLetter) -> bytes:
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


def reason_kind(reason: str) -> str:
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


def dlq_row(topic: str, partition: int, offset: int, value: bytes) -> DlqRow | None:
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


async def land(sink: WarehouseSink, metrics: WorkerMetrics, records: dict[TopicPartition, list[Any]]) -> None:
    """The dead-letter topic's records as ``dlq`` rows; a row the warehouse rejects is logged
    and counted, never retried (it would be rejected again)."""
    rows = [
        row for tp, messages in records.items() for m in messages
        if (row := dlq_row(tp.topic, tp.partition, m.offset, m.value)) is not None
    ]  # fmt: skip
    for row, reason in await sink.insert("dlq", rows) if rows else []:
        log.error("the warehouse rejected a dead letter %s: %s", row.id, reason)
        metrics.dead_letters.labels("dead_letters", "dropped").inc()
