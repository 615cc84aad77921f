"""Dead letters: listing them, and re-submitting them to the raw topic.

A replayed letter becomes a one-event raw batch of its family and route, as if the client had
sent it again: it passes the normalizer (fixed, presumably) or comes back to the DLQ with its
reason. Its message id is the client's own, else derived from the letter's id, so replaying the
same letter twice is deduplicated downstream.
"""

from __future__ import annotations

import time

import msgspec
from aiokafka import AIOKafkaProducer

from pipeline.warehouse import Warehouse
from pipeline.warehouse.formats import QUERY_FORMATS
from sluice.envelope import RawBatch, body_digest, encoder
from sluice.kafkaconf import kafka_security
from sluice.settings import Settings

COLUMNS = "id, received_at, org_id, family, route, source, reason, payload"


class Letter(msgspec.Struct):
    id: str
    org_id: str
    family: str
    route: str
    payload: str
    project_id: str
    env: str
    batch: str


def list_letters(warehouse: Warehouse, org_id: str | None, limit: int, fmt: str) -> bytes:
    where = "WHERE org_id = {org:String}" if org_id else ""
    sql = f"SELECT {COLUMNS} FROM dlq FINAL {where} ORDER BY received_at DESC LIMIT {{limit:UInt64}}"
    parameters: dict[str, str | int] = {"limit": int(limit)} | ({"org": org_id} if org_id else {})
    return warehouse.execute(sql, QUERY_FORMATS[fmt], parameters=parameters)


async def replay(settings: Settings, warehouse: Warehouse, *, ids: list[str], org_id: str | None) -> int:
    conditions: list[str] = []
    parameters: dict[str, str | list[str]] = {}
    if ids:
        conditions.append("has({ids:Array(String)}, id)")
        parameters["ids"] = ids
    if org_id:
        conditions.append("org_id = {org:String}")
        parameters["org"] = org_id
    sql = (
        "SELECT id, org_id, family, route, payload, project_id, env, batch FROM dlq FINAL "
        f"WHERE {' AND '.join(conditions)} AND family != ''"
    )
    out = warehouse.execute(sql, "JSONEachRow", parameters=parameters)
    letters = [msgspec.json.decode(line, type=Letter) for line in out.splitlines() if line]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, **kafka_security(settings)
    )
    await producer.start()
    try:
        for letter in letters:
            batch = RawBatch(
                family=letter.family,  # type: ignore[arg-type]
                route=letter.route, org_id=letter.org_id, project_id=letter.project_id or "default",
                env=letter.env or "production", received_at=time.time(),
                body_digest=body_digest(letter.id.encode()), events=[msgspec.Raw(letter.payload.encode())],
                indexes=[0], batch=msgspec.json.decode(letter.batch or "{}", type=dict[str, msgspec.Raw]),
            )  # fmt: skip
            await producer.send_and_wait(settings.raw_topic, encoder.encode(batch), key=letter.org_id.encode())
    finally:
        await producer.stop()
    return len(letters)
