"""Effectively once under crashes: the worker is SIGKILLed at random moments while a load with 5%
duplicate message ids runs; afterwards events, rollups and the scorecard equal the truth."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from commands.devrun import terminate
from sluice.settings import Settings
from tests.builders import encode
from tests.load import ab_test, settles_on_truth
from tests.processes import gateway_url, running, sluice, spawn, wait_http

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

SOAK = os.environ.get("SLUICE_SOAK") == "1"  # `make soak`: more units, more kills, longer
KILLS = 12 if SOAK else 4
UNITS = 5000 if SOAK else 1000
LOAD_SECONDS = 60.0 if SOAK else 20.0


async def test_sigkill_during_load_loses_and_double_counts_nothing(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = Settings.from_env(kafka_settings.to_env(), sink_batch_rows=500, sink_batch_seconds=0.3)
    batches, truth = ab_test(
        "exp_crash", {"control": UNITS, "treatment": UNITS}, {"control": 0.2, "treatment": 0.3},
        duplicate_rate=0.05, batch_size=100, seed=11,
    )  # fmt: skip
    key = sluice(settings, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout.strip()
    rng = random.Random(5)
    log = tmp_path / "worker.log"
    worker = spawn(settings, "worker", log)
    try:
        wait_http(f"{settings.worker_url}/healthz", 60, worker)
        with running(settings, "gateway", f"{gateway_url(settings)}/readyz", tmp_path / "gw.log"):
            pace = LOAD_SECONDS / len(batches)  # spread the load over about LOAD_SECONDS
            kill_at = sorted(rng.uniform(2.0, LOAD_SECONDS - 2.0) for _ in range(KILLS))
            started = time.monotonic()
            async with aiohttp.ClientSession() as http:
                for body in batches:
                    async with http.post(
                        f"{gateway_url(settings)}/v1/events", data=encode(body),
                        headers={"Authorization": f"Bearer {key}"},
                    ) as response:  # fmt: skip
                        assert response.status == 200
                    if kill_at and time.monotonic() - started >= kill_at[0]:
                        kill_at.pop(0)
                        os.killpg(worker.pid, signal.SIGKILL)
                        worker.wait()
                        worker = spawn(settings, "worker", log)
                    await asyncio.sleep(pace)
        assert not kill_at, "the load ended before every kill"
        wait_http(f"{settings.worker_url}/healthz", 60, worker)

        await settles_on_truth(settings, truth)

        card = json.loads(sluice(settings, "experiments", "results", "--org", "acme", "--format", "json",
                                 "exp_crash").stdout)  # fmt: skip
        assert {v["variant"]: (v["exposed"], v["converted"]) for v in card["variants"]} == {
            v: (truth.exposed[v], truth.converted[v]) for v in truth.exposed
        }
        # the worker's per-unit tallies (count and value of each unit's purchases) are exact too
        for kind, each in (("count", 1.0), ("mean", 10.0)):
            asked = ("--metric", "purchase", "--kind", kind, "--no-cuped", "exp_crash")
            tallied = json.loads(sluice(settings, "experiments", "results", "--org", "acme", "--format", "json",
                                        *asked).stdout)  # fmt: skip
            assert {v["variant"]: v["sum"] for v in tallied["variants"]} == {
                v: truth.converted[v] * each for v in truth.exposed
            }
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-6000:])
        raise
    finally:
        terminate(worker)  # SIGTERM, then SIGKILL if it lingers: both are safe for the counts
