"""Faults under load: nothing the gateway acknowledged is lost."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import msgspec
import pytest

from sluice.envelope import raw_batch_decoder
from sluice.loadgen import Options, run
from sluice.settings import Settings
from tests.processes import gateway_url, raw_records, running, sluice

pytestmark = pytest.mark.kafka


async def test_gateway_sigterm_under_load_drains_and_loses_nothing_acknowledged(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    key = sluice(kafka_settings, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout
    with running(kafka_settings, "gateway", f"{gateway_url(kafka_settings)}/readyz", tmp_path / "gw.log") as gateway:
        options = Options(
            url=gateway_url(kafka_settings), key=key.strip(), org="acme", mix={"solute": 1, "traffical": 1},
            batch_size=20, rate=3000, duration=6, connections=16, progress=False,
        )  # fmt: skip
        load = asyncio.create_task(run(options))
        await asyncio.sleep(2.5)
        os.killpg(gateway.pid, signal.SIGTERM)  # mid-load
        result = await load
        assert await asyncio.to_thread(gateway.wait, 30) == 0
    assert result.statuses[200] > 0  # it was serving when told to stop
    assert result.statuses[0] > 0  # and refused connections once it had stopped
    in_kafka = set()
    for value in await raw_records(kafka_settings):
        for event in raw_batch_decoder.decode(value).events:
            fields = msgspec.json.decode(event)
            in_kafka.add(fields.get("messageId") or fields.get("id"))
    assert result.acked_ids <= in_kafka, f"{len(result.acked_ids - in_kafka)} acknowledged events are not in Kafka"
