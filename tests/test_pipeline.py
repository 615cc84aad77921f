"""The worker on a real broker and chDB: dedupe, users and companies, experiments, the DLQ."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.stats import Options, VariantSums, analyze
from sluice.envelope import DeadLetter, encoder
from sluice.routing import partition_of, unit_route
from sluice.settings import Settings
from tests.builders import encode, solute_body, solute_event, traffical_event
from tests.load import ab_test
from tests.processes import gateway_url, running, sluice
from tests.test_keyed import keyed_topic_records

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


class System:
    def __init__(self, settings: Settings, key: str, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.key = key
        self.http = http

    async def post(self, path: str, body: bytes, **headers: str) -> dict[str, Any]:
        headers.setdefault("Authorization", f"Bearer {self.key}")
        headers.setdefault("X-Api-Key", self.key)
        async with self.http.post(f"{gateway_url(self.settings)}{path}", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    def rows(self, sql: str) -> list[dict[str, Any]]:
        done = sluice(self.settings, "query", "--format", "json", sql)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line]

    def wait(self, sql: str, expected: Any, timeout: float = 90) -> Any:
        """Poll until ``sql`` gives ``expected`` (or time is up); return the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.rows(sql)
            if found == expected or time.monotonic() > deadline:
                return found
            time.sleep(0.3)


@asynccontextmanager
async def system(settings: Settings, tmp_path: Path) -> AsyncIterator[System]:
    key = sluice(settings, "keys", "create", "--org", "acme", "--kind", "publishable", "--scope", "sdk:write").stdout
    with (
        running(settings, "worker", f"{settings.worker_url}/healthz", tmp_path / "worker.log"),
        running(settings, "gateway", f"{gateway_url(settings)}/readyz", tmp_path / "gw.log"),
    ):
        async with aiohttp.ClientSession() as http:
            yield System(settings, key.strip(), http)


async def test_duplicates_are_counted_once_inside_across_batches_and_families(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    async with system(kafka_settings, tmp_path) as s:
        batch = solute_body(solute_event(messageId="m1"), solute_event(messageId="m1"), solute_event(messageId="m2"))
        await s.post("/api/events", batch)
        await s.post("/api/events", batch)  # the SDK retried the whole request
        same_id_other_family = traffical_event(1, id="m2", unitKey="user_123", orgId=None)
        await s.post("/v1/events", encode({"events": [same_id_other_family]}))
        # no FINAL: the worker itself wrote each message id once
        expected = [{"message_id": "m1", "family": "solute"}, {"message_id": "m2", "family": "solute"}]
        sql = "SELECT message_id, family FROM events ORDER BY message_id"
        assert s.wait(sql, expected) == expected
        wanted = [
            'sluice_worker_events_total{family="solute",outcome="duplicate",reason="message_id",stage="keyed"} 4.0',
            'sluice_worker_events_total{family="traffical",outcome="duplicate",reason="message_id",stage="keyed"} 1.0',
        ]
        text = ""
        for _ in range(180):
            async with s.http.get(f"{kafka_settings.worker_url}/metrics") as response:
                text = await response.text()
            if all(line in text for line in wanted):
                break
            await asyncio.sleep(0.5)
        assert all(line in text for line in wanted), text
        assert s.rows(sql) == expected  # and nothing more arrived


async def test_events_are_processed_in_the_partition_they_land_in(kafka_settings: Settings, tmp_path: Path) -> None:
    """One hop: the gateway puts a request's events in their unit's partition and the worker
    processes them there, forwarding nothing through the keyed topic. (A worker that labelled a
    record with the wrong partition would still count right — by forwarding every event, a
    second hop for all — so only the keyed topic shows it.)"""
    async with system(kafka_settings, tmp_path) as s:
        units = [f"unit-{n}" for n in range(12)]  # over every partition: the test would be idle on one
        assert len({partition_of(unit_route("acme", u), kafka_settings.raw_partitions) for u in units}) > 1
        for n, unit in enumerate(units):
            event = traffical_event(1, id=f"e{n}", unitKey=unit, userId=None, orgId=None)
            await s.post("/v1/events", encode({"events": [event]}))
        assert s.wait("SELECT count() AS n FROM events", [{"n": len(units)}]) == [{"n": len(units)}]
    assert await keyed_topic_records(kafka_settings, kafka_settings.raw_partitions) == []


async def test_identify_alias_and_group_shape_users_and_companies(kafka_settings: Settings, tmp_path: Path) -> None:
    async with system(kafka_settings, tmp_path) as s:
        await s.post("/api/events", solute_body(
            solute_event(type="identify", event=None, messageId="i1", timestamp="2025-01-15T10:00:00Z",
                         traits={"plan": "free", "name": "Ada"}),
            solute_event(type="identify", event=None, messageId="i2", timestamp="2025-01-15T10:05:00Z",
                         traits={"plan": "pro"}),
            solute_event(type="alias", event=None, messageId="a1", previousId="anon_456"),
            solute_event(type="group", event=None, messageId="g1", groupId="co_42", traits={"seats": 40}),
            sent_at=None,
        ))  # fmt: skip
        await s.post("/api/sdk/companies/identify", encode({"company_id": "co_42", "traits": {"name": "Acme"}}))
        users = s.wait(
            "SELECT user_id, traits, company_ids, first_seen FROM users FINAL",
            [{"user_id": "user_123", "traits": '{"name":"Ada","plan":"pro"}', "company_ids": ["co_42"],
              "first_seen": "2025-01-15 10:00:00.000"}],
        )  # fmt: skip
        assert users[0]["traits"] == '{"name":"Ada","plan":"pro"}', users
        assert s.wait("SELECT previous_id, user_id FROM user_aliases FINAL", [{"previous_id": "anon_456",
                      "user_id": "user_123"}])  # fmt: skip
        expected = [{"company_id": "co_42", "traits": '{"name":"Acme","seats":40}'}]
        assert s.wait("SELECT company_id, traits FROM companies FINAL", expected) == expected


async def test_a_scripted_ab_test_gives_its_truth_and_a_skewed_split_is_flagged(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    fair, truth = ab_test("exp_fair", {"control": 200, "treatment": 200}, {"control": 0.2, "treatment": 0.3},
                          duplicate_rate=0.05)  # fmt: skip
    skewed, _ = ab_test("exp_skew", {"control": 300, "treatment": 200}, {"control": 0.1, "treatment": 0.1})
    async with system(kafka_settings, tmp_path) as s:
        for body in fair + skewed:
            await s.post("/v1/events/batch", encode(body))
        expected_units = [{"variant_id": v, "n": n} for v, n in sorted(truth.exposed.items())]
        sql = "SELECT variant_id, count() AS n FROM experiment_units FINAL WHERE experiment_id = 'exp_fair' "
        assert s.wait(sql + "GROUP BY variant_id ORDER BY variant_id", expected_units) == expected_units
        conversions = "SELECT sum(tracks) AS n FROM tracks_1m WHERE experiment_id = 'exp_fair'"
        assert s.wait(conversions, [{"n": truth.track_events}]) == [{"n": truth.track_events}]

        truth_counts = {v: (truth.exposed[v], truth.converted[v]) for v in truth.exposed}
        card: dict[str, Any] = {}
        for _ in range(180):  # units are spread over partitions: wait until every one is in
            done = sluice(kafka_settings, "experiments", "results", "--org", "acme", "--format", "json", "exp_fair")
            card = json.loads(done.stdout) if done.returncode == 0 else {"variants": []}
            if {v["variant"]: (v["exposed"], v["converted"]) for v in card["variants"]} == truth_counts:
                break
            await asyncio.sleep(0.5)
        by_variant = {v["variant"]: v for v in card["variants"]}
        assert {v: (r["exposed"], r["converted"]) for v, r in by_variant.items()} == truth_counts
        treatment = by_variant["treatment"]
        assert treatment["lift_abs"] == pytest.approx(0.10)
        assert treatment["lift_rel"] == pytest.approx(0.50)
        expected = analyze(VariantSums("control", 200, 40, 40), [VariantSums("treatment", 200, 60, 60)], Options())
        assert treatment["p_value"] == pytest.approx(expected.variants[1].p_value)  # sequential by default
        assert card["srm_mismatch"] is False and card["multiple_exposure_units"] == 0

        rollups = s.rows(
            "SELECT (SELECT sum(exposures) FROM exposures_1m WHERE experiment_id = 'exp_fair') AS exposures, "
            "(SELECT sum(units) FROM exposures_1m WHERE experiment_id = 'exp_fair') AS units, "
            "(SELECT sum(value_sum) FROM tracks_1m WHERE experiment_id = 'exp_fair') AS value"
        )
        assert rollups == [{"exposures": truth.exposure_events, "units": 400, "value": truth.value_sum}]

        skew: dict[str, Any] = {"variants": []}
        for _ in range(180):
            done = sluice(kafka_settings, "experiments", "results", "--org", "acme", "--format", "json", "exp_skew")
            skew = json.loads(done.stdout) if done.returncode == 0 else {"variants": []}
            if sum(v["exposed"] for v in skew["variants"]) == 500:
                break
            await asyncio.sleep(0.5)
        assert skew["srm_mismatch"] is True and skew["srm_p_value"] < 0.001
        table = sluice(kafka_settings, "experiments", "results", "--org", "acme", "exp_skew").stdout
        assert "MISMATCH" in table


async def test_dead_letters_are_listed_and_replayed(kafka_settings: Settings, tmp_path: Path) -> None:
    async with system(kafka_settings, tmp_path) as s:
        await s.post("/api/events", solute_body(solute_event(messageId="ok"), solute_event(event=None)))
        # a letter whose event is valid now, as after a normalizer fix
        fixed = solute_event(messageId="was-refused")
        letter = DeadLetter(
            family="solute", route="/api/events", org_id="acme", reason="an old bug", received_at=time.time(),
            payload=msgspec.Raw(encode(fixed)), source="worker", index=0, project_id="default", env="production",
        )  # fmt: skip
        producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap)
        await producer.start()
        await producer.send_and_wait(kafka_settings.dlq_topic, encoder.encode(letter))
        await producer.stop()

        letters = _letters(s, at_least=2)
        assert sorted(row["reason"] for row in letters) == ["an old bug", "track events require 'event'"]
        old = next(row for row in letters if row["reason"] == "an old bug")
        replayed = sluice(kafka_settings, "dlq", "replay", "--id", old["id"])
        assert replayed.returncode == 0 and "re-submitted 1 event" in replayed.stderr
        expected = [{"message_id": "ok"}, {"message_id": "was-refused"}]
        assert s.wait("SELECT message_id FROM events FINAL ORDER BY message_id", expected) == expected


def _letters(s: System, at_least: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        done = sluice(s.settings, "dlq", "list", "--org", "acme", "--format", "json")
        assert done.returncode == 0, done.stderr
        letters = [json.loads(line) for line in done.stdout.splitlines() if line]
        if len(letters) >= at_least or time.monotonic() > deadline:
            return letters
        time.sleep(0.3)
