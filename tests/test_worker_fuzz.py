"""Worker-side fuzzing: hypothesis builds requests the gateway may accept, for every family, full
of hostile values (times anywhere from year 1 to 9999 and any text, numbers far past a float,
any unicode, many layers and experiments), and sends them through the real gateway → Kafka →
worker → chDB. After each example a canary event for a unit of every partition must land within
seconds and the worker must still be running with no stage restarted. ``make test`` runs a modest number of examples,
``make soak`` (SLUICE_SOAK=1) many more."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.warehouse.readonly import token_path
from sluice.settings import Settings
from tests.canary import canary_batch, landed_sql
from tests.processes import gateway_url, running, sluice
from tests.waiting import wait_until_blocking

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

EXAMPLES = 500 if os.environ.get("SLUICE_SOAK") == "1" else 40
CANARY_SECONDS = 30.0

texts = st.text(max_size=40) | st.sampled_from(["", "\x00", "é" * 300, "\u202e", "𝔘nicode", "a" * 5000])
numbers = (
    st.integers(min_value=-(10**400), max_value=10**400) | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, -(2**63) - 1, 2**64])
)  # fmt: skip
times = (
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([None, *[timezone(timedelta(hours=h)) for h in (-12, 0, 14)]]),
    ).map(lambda moment: moment.isoformat())
    | texts
)
values = st.recursive(st.none() | st.booleans() | numbers | texts,
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                      max_leaves=12)  # fmt: skip
objects = st.dictionaries(texts, values, max_size=6)


def layers() -> st.SearchStrategy[list[dict[str, Any]]]:
    layer = st.fixed_dictionaries(
        {"layerId": texts, "bucket": st.integers(0, 10_000)},
        optional={"policyId": texts, "allocationName": texts, "attributionOnly": st.booleans()},
    )
    many = st.integers(1, 400).map(lambda n: [{"layerId": f"l{i}", "policyId": f"p{i}", "allocationName": "a",
                                               "bucket": i} for i in range(n)])  # fmt: skip
    return st.lists(layer, min_size=1, max_size=5) | many


traffical = st.fixed_dictionaries({
    "events": st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["exposure", "decision", "track"]), "unitKey": texts.filter(bool), "timestamp": times},
        optional={"id": texts, "decisionId": texts, "event": texts, "layers": layers(), "userId": texts,
                  "properties": st.fixed_dictionaries({}, optional={"value": numbers, "order_total": numbers,
                                                                    "extra": values})},
    ), min_size=1, max_size=5),
})  # fmt: skip
solute = st.fixed_dictionaries(
    {"batch": st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(["track", "identify", "page", "group", "alias"])},
        optional={"event": texts, "userId": texts, "anonymousId": texts, "timestamp": times, "messageId": texts,
                  "properties": objects, "traits": objects, "context": objects, "groupId": texts, "previousId": texts},
    ), min_size=1, max_size=5)},
    optional={"sentAt": times},
)  # fmt: skip
halo = st.fixed_dictionaries(
    {"events": st.lists(st.fixed_dictionaries({"event_type": texts}, optional={
        "metadata": objects, "timestamp": times, "page_url": texts, "element_selector": texts}),
        min_size=1, max_size=5)},
    optional={"user_id": texts, "session_id": texts},
)  # fmt: skip
xaiku = st.fixed_dictionaries({"events": st.lists(st.fixed_dictionaries(
    {"eventName": texts, "experimentId": texts, "sessionId": texts},
    optional={"variantId": texts, "value": numbers, "userId": values, "extra": values}),
    min_size=1, max_size=5)})  # fmt: skip

ROUTES = {
    "traffical": ("/v1/events", traffical), "solute": ("/api/events", solute),
    "halo": ("/api/sdk/events", halo), "xaiku": ("/api/v1/analytics", xaiku),
}  # fmt: skip
requests = st.sampled_from(sorted(ROUTES)).flatmap(lambda family: st.tuples(st.just(family), ROUTES[family][1]))


def post(url: str, body: bytes, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}", "X-Api-Key": key, "X-public-key": key,
               "Content-Type": "application/json"}  # fmt: skip
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_whatever_the_gateway_accepts_never_stops_the_worker(kafka_settings: Settings, tmp_path: Path) -> None:
    key = sluice(kafka_settings, "keys", "create", "--org", "acme", "--kind", "publishable", "--scope", "sdk:write")
    key_value = key.stdout.strip()
    url = gateway_url(kafka_settings)
    worker_log = tmp_path / "worker.log"
    with (
        running(kafka_settings, "worker", f"{kafka_settings.worker_url}/healthz", worker_log) as worker,
        running(kafka_settings, "gateway", f"{url}/readyz", tmp_path / "gw.log"),
    ):
        token = token_path(kafka_settings.home).read_text().strip()

        def landed(message_ids: list[str]) -> bool:
            request = urllib.request.Request(
                f"{kafka_settings.worker_url}/query?format=TSV", headers={"Authorization": f"Bearer {token}"},
                data=landed_sql(message_ids).encode(),
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=30) as answer:
                return bool(answer.read().strip() == str(len(message_ids)).encode())

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        @given(requests)
        def one(example: tuple[str, dict[str, Any]]) -> None:
            family, body = example
            status = post(f"{url}{ROUTES[family][0]}", msgspec.json.encode(body), key_value)
            assert status < 500, (family, status)
            canary_body, canaries = canary_batch("acme", kafka_settings.raw_partitions)
            assert post(f"{url}/api/events", canary_body, key_value) == 200

            def alive_and_landed() -> bool:
                assert worker.poll() is None, f"the worker died after a {family} request"
                return landed(canaries)

            stalled = f"a canary in every partition after a {family} request: {body!r:.500}"
            wait_until_blocking(alive_and_landed, CANARY_SECONDS, stalled, every=0.2)

        one()
        with urllib.request.urlopen(f"{kafka_settings.worker_url}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert "sluice_worker_stage_restarts_total{" not in metrics, "a stage failed a whole step"
