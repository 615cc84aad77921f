"""One event the whole way: HTTP → gateway → Kafka → worker → ClickHouse (chDB) → query."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from sluice.envelope import raw_batch_decoder
from sluice.settings import Settings
from tests.builders import solute_body, solute_event
from tests.processes import gateway_url, raw_records, running, sluice

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


def query_rows(settings: Settings, sql: str) -> list[dict[str, object]]:
    done = sluice(settings, "query", "--format", "json", sql)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line]


def wait_rows(settings: Settings, sql: str, count: int, timeout: float = 90) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        found = query_rows(settings, sql)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


async def test_reference_example_lands_in_events(kafka_settings: Settings, tmp_path: Path) -> None:
    created = sluice(kafka_settings, "keys", "create", "--org", "acme", "--kind", "publishable")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("pk_") and "\n" not in key

    worker_health = f"{kafka_settings.worker_url}/healthz"
    with (
        running(kafka_settings, "worker", worker_health, tmp_path / "worker.log"),
        running(kafka_settings, "gateway", f"{gateway_url(kafka_settings)}/readyz", tmp_path / "gw.log"),
    ):
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"{gateway_url(kafka_settings)}/api/events", data=solute_body(),
                headers={"Content-Type": "application/json", "X-Api-Key": key},
            )  # fmt: skip
            assert response.status == 200
            assert await response.json() == {"success": True, "processed": 1, "failed": 0}

        # the 200 came after Kafka's ack, so the record is already there
        [record] = [raw_batch_decoder.decode(r) for r in await raw_records(kafka_settings)]
        assert (record.org_id, record.family, record.indexes) == ("acme", "solute", [0])

        found = wait_rows(
            kafka_settings,
            "SELECT org_id, message_id, type, event, user_id, anonymous_id, session_id, page_url, "
            "timestamp, properties FROM events FINAL",
            count=1,
        )
        assert len(found) == 1
        row = found[0]
        assert {k: v for k, v in row.items() if k not in ("timestamp", "properties")} == {
            "org_id": "acme", "message_id": "msg_789", "type": "track", "event": "Button Clicked",
            "user_id": "user_123", "anonymous_id": "anon_456", "session_id": "session_abc",
            "page_url": "https://example.com/homepage",
        }  # fmt: skip
        assert json.loads(str(row["properties"])) == solute_event()["properties"]


async def test_key_created_while_gateway_runs_is_honoured_within_two_seconds(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    url = gateway_url(kafka_settings)
    with running(kafka_settings, "gateway", f"{url}/readyz", tmp_path / "gw.log"):
        created = sluice(kafka_settings, "keys", "create", "--org", "acme", "--kind", "secret",
                         "--prefix", "traffical_sk_", "--scope", "sdk:write")  # fmt: skip
        key = created.stdout.strip()
        created_at = time.monotonic()
        async with aiohttp.ClientSession() as http:
            status = 0
            while time.monotonic() - created_at < 2.0:
                response = await http.post(f"{url}/api/events", data=solute_body(), headers={"X-Api-Key": key})
                status = response.status
                if status == 200:
                    break
            assert status == 200

            revoked = sluice(kafka_settings, "keys", "revoke", key)
            assert revoked.returncode == 0, revoked.stderr
            revoked_at = time.monotonic()
            while time.monotonic() - revoked_at < 2.0:
                response = await http.post(f"{url}/api/events", data=solute_body(), headers={"X-Api-Key": key})
                status = response.status
                if status == 401:
                    break
            assert status == 401


async def test_every_family_lands_in_events(kafka_settings: Settings, tmp_path: Path) -> None:
    from tests.builders import HALO_EXAMPLE, TRAFFICAL_EXAMPLE, XAIKU_CURL_EVENTS, encode, halo_user

    key = sluice(
        kafka_settings, "keys", "create", "--org", "org_acme", "--kind", "publishable", "--scope", "sdk:write"
    ).stdout.strip()
    url = gateway_url(kafka_settings)
    requests = [
        ("/api/sdk/events", {"Authorization": f"Bearer {key}"}, encode(HALO_EXAMPLE)),
        ("/api/sdk/users/identify", {"Authorization": f"Bearer {key}"}, encode(halo_user())),
        ("/api/v1/analytics", {"Content-Type": "text/plain;charset=UTF-8"},
         encode({"events": XAIKU_CURL_EVENTS, "pkey": key})),
        ("/api/events", {"X-Api-Key": key}, solute_body()),
        ("/v1/events/batch", {"Authorization": f"Bearer {key}"}, encode(TRAFFICAL_EXAMPLE)),
    ]  # fmt: skip
    with (
        running(kafka_settings, "worker", f"{kafka_settings.worker_url}/healthz", tmp_path / "worker.log"),
        running(kafka_settings, "gateway", f"{url}/readyz", tmp_path / "gw.log"),
    ):
        async with aiohttp.ClientSession() as http:
            for path, headers, body in requests:
                async with http.post(f"{url}{path}", data=body, headers=headers) as response:
                    assert response.status == 200, (path, await response.text())
        found = wait_rows(
            kafka_settings,
            "SELECT family, type, event, unit_key, experiment_id, variant_id FROM events FINAL "
            "ORDER BY family, type, event",
            count=8,
        )
    assert found == [
        {"family": "halo", "type": "identify", "event": "identify", "unit_key": "user_123",
         "experiment_id": "", "variant_id": ""},
        {"family": "halo", "type": "page", "event": "page_view", "unit_key": "user_123",
         "experiment_id": "", "variant_id": ""},
        {"family": "halo", "type": "track", "event": "click", "unit_key": "user_123",
         "experiment_id": "", "variant_id": ""},
        {"family": "solute", "type": "track", "event": "Button Clicked", "unit_key": "user_123",
         "experiment_id": "", "variant_id": ""},
        {"family": "traffical", "type": "exposure", "event": "exposure", "unit_key": "user_789",
         "experiment_id": "policy_color_test", "variant_id": "treatment"},
        {"family": "traffical", "type": "track", "event": "purchase", "unit_key": "user_789",
         "experiment_id": "", "variant_id": ""},
        {"family": "xaiku", "type": "exposure", "event": "impression", "unit_key": "sess_xyz",
         "experiment_id": "exp_abc123", "variant_id": "var_001"},
        {"family": "xaiku", "type": "track", "event": "click", "unit_key": "sess_xyz",
         "experiment_id": "exp_abc123", "variant_id": "var_001"},
    ]  # fmt: skip
