"""Issue 12's "done": with what ``make run`` sets up (dev keys and example configuration), a page
with either SDK gets its configuration, and everything it sends lands — nothing the SDK's own
schema allows ends up a dead letter. Requests as the SDKs make them (tests/sdk_requests.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from commands.devrun import bootstrap_dev_org
from sluice.settings import Settings
from tests.builders import traffical_sdk_batch, xaiku_sdk_event
from tests.processes import gateway_url, query_rows, running
from tests.sdk_requests import SDK_REQUESTS

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def wait_rows(settings: Settings, sql: str, count: int, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(found := query_rows(settings, sql)) < count and time.monotonic() < deadline:
        time.sleep(0.3)
    return found


async def test_a_page_with_either_sdk_gets_its_config_and_everything_lands(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    pk = dict(await bootstrap_dev_org(kafka_settings))["publishable (scope sdk:write)"]
    url = gateway_url(kafka_settings)
    with (
        running(kafka_settings, "worker", f"{kafka_settings.worker_url}/healthz", tmp_path / "worker.log"),
        running(kafka_settings, "gateway", f"{url}/readyz", tmp_path / "gw.log"),
    ):
        async with aiohttp.ClientSession() as http:
            # Traffical js-client: the bundle, then its decision, exposure and track
            sdk = SDK_REQUESTS["traffical-config"]
            async with http.get(url + sdk.path, headers=sdk.with_key(pk)) as response:
                assert response.status == 200 and (await response.json())["projectId"] == "proj_test"
            sdk = SDK_REQUESTS["traffical-events"]
            body = msgspec.json.encode(traffical_sdk_batch())
            async with http.post(url + sdk.path, data=body, headers=sdk.with_key(pk)) as response:
                assert await response.json() == {"accepted": 3, "written": 3}
            # Xaiku: its experiments, an impression by fetch, a click by sendBeacon on unload
            sdk = SDK_REQUESTS["xaiku-experiments"]
            headers = {**sdk.with_key(pk), "X-experiment-ids": "exp_hero"}
            async with http.get(url + sdk.path, headers=headers) as response:
                variants = (await response.json())["experiments"]["exp_hero"]
            shown = {"experimentId": "exp_hero", "variantId": variants[1]["id"], "sessionId": "guid-1"}
            sdk = SDK_REQUESTS["xaiku-analytics"]
            fetched = msgspec.json.encode({"events": [xaiku_sdk_event(**shown)]})
            async with http.post(url + sdk.path, data=fetched, headers=sdk.with_key(pk)) as response:
                assert response.status == 200
            beacon = json.dumps({"events": [xaiku_sdk_event(**shown, eventName="click")], "pkey": pk})
            headers = {"Content-Type": "text/plain;charset=UTF-8"}
            async with http.post(url + sdk.path, data=beacon.encode(), headers=headers) as response:
                assert response.status == 200

        events = wait_rows(kafka_settings, "SELECT family, type, experiment_id, variant_id FROM events FINAL", 5)
        assert sorted(tuple(e.values()) for e in events) == sorted([
            ("traffical", "decision", "policy_color_test", "treatment"),
            ("traffical", "exposure", "policy_color_test", "treatment"),
            ("traffical", "track", "", ""),
            ("xaiku", "exposure", "exp_hero", "bold"),
            ("xaiku", "track", "exp_hero", "bold"),
        ])  # fmt: skip
        units = wait_rows(
            kafka_settings, "SELECT experiment_id, variant_id, unit_key FROM experiment_units FINAL ORDER BY 1", 2
        )
        assert [tuple(u.values()) for u in units] == [
            ("exp_hero", "bold", "guid-1"), ("policy_color_test", "treatment", "user-abc"),
        ]  # fmt: skip
        assert query_rows(kafka_settings, "SELECT reason FROM dlq") == []
