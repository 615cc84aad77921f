"""Hostile input through the whole pipeline: HTTP (or, for what the gateway would refuse, the raw
topic directly) → Kafka → worker → chDB. Each HTTP case gets the status written beside it (the
gateway takes them all: they are the worker's to survive). After each case a canary event for a
unit of every partition must land within seconds and the worker must still be running: nothing a
publishable key can send stops a stage, on any partition. The cases are those of issue 10, found
by trying them as an attacker would."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from sluice.envelope import DeadLetter, RawBatch, encoder
from sluice.settings import Settings
from tests.builders import encode, solute_event, traffical_event
from tests.canary import canary_batch, landed_sql
from tests.processes import gateway_url, query_rows, running, sluice
from tests.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

CANARY_SECONDS = 30.0


def months(n: int) -> list[dict[str, Any]]:
    """One unit's track events in ``n`` different months from 1950-01 on."""
    return [
        traffical_event(1, orgId=None, projectId=None, id=f"m{i}", unitKey="u-months",
                        timestamp=f"{1950 + i // 12}-{i % 12 + 1:02d}-15T00:00:00Z")
        for i in range(n)
    ]  # fmt: skip


def identify_flood() -> bytes:
    """~0.99 MB: 100 identify events for one user, each with ~9.6 KB of traits."""
    traits = {f"t{n}": "x" * 90 for n in range(100)}
    events = [solute_event(type="identify", event=None, messageId=f"idf-{n}", traits=traits) for n in range(100)]
    return msgspec.json.encode({"batch": events})


def many_layers(request: int) -> bytes:
    layers = [{"layerId": f"l{n}", "policyId": f"p{request}-{n}", "allocationName": "a", "bucket": 1}
              for n in range(11_000)]  # fmt: skip
    return encode({"events": [traffical_event(0, orgId=None, projectId=None, id=f"layers-{request}",
                                              unitKey="u-layers", layers=layers)]})  # fmt: skip


HTTP_CASES: list[tuple[str, str, Callable[[], bytes], int]] = [
    ("101 months in one request", "/v1/events", lambda: encode({"events": months(101)}), 200),
    ("year 1 at +14:00", "/v1/events",
     lambda: encode({"events": [traffical_event(1, orgId=None, projectId=None, id="y1",
                                                timestamp="0001-01-01T00:00:00+14:00")]}), 200),
    ("sentAt in year 1, an event in 9999", "/api/events",
     lambda: encode({"batch": [solute_event(messageId="y9999", timestamp="9999-12-31T23:59:59Z")],
                     "sentAt": "0001-01-01T00:00:00Z"}), 200),
    ("a 400-digit value", "/v1/events",
     lambda: b'{"events":[{"type":"track","unitKey":"u-big","event":"buy","id":"big","timestamp":'
             b'"2026-05-21T10:00:00Z","properties":{"value":' + b"9" * 400
             + b',"order_total":-' + b"9" * 400 + b"}}]}", 200),
    # with its timestamp (required): without one the gateway refused it (400) and the worker never saw it
    ("a 400-digit Solute order_total", "/api/events",
     lambda: b'{"batch":[{"type":"track","event":"buy","userId":"u-big2","messageId":"big2",'
             b'"timestamp":"2026-05-21T10:00:00Z","properties":{"order_total":' + b"9" * 400 + b"}}]}", 200),
    ("0.99 MB of identify for one user", "/api/events", identify_flood, 200),
    *[(f"11,000 layers, request {n}", "/v1/events", lambda n=n: many_layers(n), 200) for n in range(4)],
]  # fmt: skip


def raw_cases(settings: Settings) -> list[tuple[str, str, bytes]]:
    """Records the gateway would not write, written straight to the worker's topics."""

    def batch(**fields: Any) -> bytes:
        base: dict[str, Any] = {
            "family": "solute", "route": "/api/events", "org_id": "acme", "project_id": "default",
            "env": "production", "received_at": time.time(), "body_digest": uuid.uuid4().hex,
            "events": [msgspec.Raw(encode(solute_event(messageId=f"raw-{uuid.uuid4().hex}")))], "indexes": [0],
        }  # fmt: skip
        base.update(fields)
        return encoder.encode(RawBatch(**base))

    letter = DeadLetter(family="solute", route="/api/events", org_id="acme", reason="test",
                        received_at=time.time(), payload=msgspec.Raw(b'"\xff\xfe"'))  # fmt: skip
    return [
        ("invalid UTF-8 inside an event", settings.raw_topic,
         batch(events=[msgspec.Raw(b'{"type":"track","event":"\xff\xfe","userId":"u8","messageId":"utf8"}')])),
        ("invalid UTF-8 in a batch field", settings.raw_topic,
         batch(family="halo", route="/api/sdk/events", batch={"user_id": msgspec.Raw(b'"\xc3\x28"')},
               events=[msgspec.Raw(b'{"event_type":"click"}')])),
        ("an unknown family", settings.raw_topic, batch(family="nope")),
        ("garbage on the raw topic", settings.raw_topic, b"\x00\xff not json"),
        ("garbage on the keyed topic", settings.keyed_topic, b"[[\"event\", {\"org_id\": 1}]] \xff"),
        ("a dead letter with invalid UTF-8", settings.dlq_topic, encoder.encode(letter)),
    ]  # fmt: skip


async def test_no_hostile_input_stops_or_crashes_the_worker(kafka_settings: Settings, tmp_path: Path) -> None:
    key = sluice(kafka_settings, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write")
    key_value = key.stdout.strip()
    url = gateway_url(kafka_settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, max_request_size=4 << 20)
    await producer.start()
    worker_log = tmp_path / "worker.log"
    try:
        with (
            running(kafka_settings, "worker", f"{kafka_settings.worker_url}/healthz", worker_log) as worker,
            running(kafka_settings, "gateway", f"{url}/readyz", tmp_path / "gw.log"),
        ):
            async with aiohttp.ClientSession() as http:
                headers = {"Authorization": f"Bearer {key_value}", "X-Api-Key": key_value}

                async def canary(case: str) -> None:
                    body, message_ids = canary_batch("acme", kafka_settings.raw_partitions)
                    async with http.post(f"{url}/api/events", data=body, headers=headers) as response:
                        assert response.status == 200

                    def landed() -> bool:
                        assert worker.poll() is None, f"the worker died after: {case}"
                        return query_rows(kafka_settings, landed_sql(message_ids)) == [{"n": len(message_ids)}]

                    await wait_until(landed, CANARY_SECONDS, f"a canary in every partition after: {case}", every=0.3)

                for case, route, body, status in HTTP_CASES:
                    async with http.post(f"{url}{route}", data=body(), headers=headers) as response:
                        assert response.status == status, (case, await response.text())
                    await canary(case)
                for case, topic, value in raw_cases(kafka_settings):
                    await producer.send_and_wait(topic, value, partition=0)
                    await canary(case)

            [row] = query_rows(kafka_settings, "SELECT count() AS n, uniqExact(toYYYYMM(timestamp)) AS months, "
                                               "countIf(has(flags, 'timestamp_replaced')) AS replaced "
                                               "FROM events FINAL WHERE unit_key = 'u-months'")  # fmt: skip
            assert row == {"n": 101, "months": 1, "replaced": 101}  # all landed, at their received time
            [row] = query_rows(kafka_settings, "SELECT original_timestamp FROM events FINAL WHERE message_id = 'y1'")
            assert row["original_timestamp"].startswith("0001-01-01T00:00:00+14:00")
            [user] = query_rows(kafka_settings, "SELECT length(traits) > 9000 AS big FROM users FINAL "
                                                "WHERE user_id = 'user_123'")  # fmt: skip
            assert user == {"big": 1}
            wanted = ("undecodable raw record", "undecodable keyed record", "worker could not normalize", "test")

            def letters_missing() -> list[str]:
                reasons = [r["reason"] for r in query_rows(kafka_settings, "SELECT reason FROM dlq FINAL")]
                return [w for w in wanted if not any(r.startswith(w) for r in reasons)]

            # the dead-letter stage loads letters on its own pace
            await wait_until(lambda: not letters_missing(), CANARY_SECONDS, f"dead letters {wanted} in the dlq table")
            async with aiohttp.ClientSession() as http, http.get(f"{kafka_settings.worker_url}/metrics") as response:
                text = await response.text()
            assert 'sluice_worker_state_capped_total{cap="pairs"} 43872.0' in text  # 4 × (11,000 − 32)
            assert 'sluice_worker_stage_restarts_total{stage="keyed"}' not in text  # isolated, never a whole step
    finally:
        await producer.stop()
