"""The gateway on a real broker: 2xx only once Kafka has the record; 503 while it is down."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from commands.localkafka import LocalKafka, free_port
from sluice.settings import Settings
from tests.builders import solute_body, solute_event
from tests.processes import gateway_url, local_broker, raw_message_ids, running, sluice
from tests.waiting import wait_until

pytestmark = pytest.mark.kafka


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker for this test alone: it gets stopped and started again."""
    with local_broker(tmp_path / "kafka") as broker:
        yield broker


async def test_outage_is_503_while_kafka_is_down_and_recovers(
    request: pytest.FixtureRequest, own_broker: LocalKafka, settings: Settings, tmp_path: Path
) -> None:
    request.getfixturevalue("kafka_bootstrap")  # the marker check; this test brings its own broker
    mine = Settings.from_env(settings.to_env(), kafka_bootstrap=own_broker.bootstrap, produce_timeout=2.0)
    key = sluice(mine, "keys", "create", "--org", "acme", "--kind", "secret").stdout.strip()
    url = f"{gateway_url(mine)}/api/events"

    async def post(message_id: str, within: float = 60) -> tuple[int, dict[str, str]]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as http,
            http.post(url, data=solute_body(solute_event(messageId=message_id)), headers={"X-Api-Key": key}) as r,
        ):
            return r.status, dict(r.headers)

    with running(mine, "gateway", f"{gateway_url(mine)}/readyz", tmp_path / "gw.log"):
        assert (await post("before"))[0] == 200
        assert await raw_message_ids(mine) == ["before"]  # acknowledged ⇒ already in the topic

        own_broker.stop()
        # answered while the broker is still away (it starts again only after): the gateway gave
        # up after its produce timeout rather than holding the request until Kafka came back
        status, headers = await post("during", within=5 * mine.produce_timeout)
        assert status == 503 and headers["Retry-After"] == "1"

        own_broker.start(heap="256m")
        own_broker.wait_ready()

        async def accepted() -> bool:  # the producer reconnects on its own
            return (await post("after"))[0] == 200

        await wait_until(accepted, 60, "the gateway accepting again", every=0.5)
        ids = await raw_message_ids(mine)
        assert ids[0] == "before" and "after" in ids  # "during" may or may not have landed late


async def test_broker_stopped_and_restarted_under_load_loses_nothing_acknowledged(
    request: pytest.FixtureRequest, own_broker: LocalKafka, settings: Settings, tmp_path: Path
) -> None:
    from commands.loadgen import Options, Result, run

    request.getfixturevalue("kafka_bootstrap")  # the marker check; this test brings its own broker
    mine = Settings.from_env(settings.to_env(), kafka_bootstrap=own_broker.bootstrap, produce_timeout=2.0)
    key = sluice(mine, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout.strip()
    with running(mine, "gateway", f"{gateway_url(mine)}/readyz", tmp_path / "gw.log"):
        options = Options(
            url=gateway_url(mine), key=key, org="acme", mix={"traffical": 1},
            batch_size=20, rate=1500, duration=16, connections=8, progress=False,
        )  # fmt: skip
        result = Result()
        load = asyncio.create_task(run(options, result))
        await wait_until(lambda: result.statuses[200] >= 20, 10, "the gateway serving the load")
        await asyncio.to_thread(own_broker.stop)  # mid-load
        await wait_until(lambda: result.statuses[503], 10, "clients refused while the broker is away")
        await asyncio.to_thread(own_broker.start, "256m")
        await asyncio.to_thread(own_broker.wait_ready)
        await load
    assert result.statuses[503] > 0, result.summary()  # refused while the broker was away
    assert result.statuses[200] > 0, result.summary()
    in_kafka = set(await raw_message_ids(mine))
    assert result.acked_ids <= in_kafka, f"{len(result.acked_ids - in_kafka)} acknowledged events are not in Kafka"


@pytest.mark.parametrize("codec", ["lz4", "zstd", "gzip"])
async def test_compressed_records_read_back_unchanged(kafka_settings: Settings, codec: str) -> None:
    from services.gateway.sink import KafkaSink
    from tests.processes import raw_records

    sink = KafkaSink(kafka_settings.kafka_bootstrap, 5.0, codec)
    await sink.start()
    try:
        value = b'{"events":["' + b"x" * 50_000 + b'"]}'
        await sink.send_all([(kafka_settings.raw_topic, b"acme", value)])
    finally:
        await sink.stop()
    assert await raw_records(kafka_settings) == [value]


async def test_a_bad_registry_record_and_a_metrics_port(kafka_settings: Settings, tmp_path: Path) -> None:
    """A gateway starts and becomes ready although the registry holds a record it cannot decode,
    serves /metrics only on its metrics port, and counts the record there."""
    from sluice.registry_topic import write_records

    await write_records(kafka_settings.kafka_bootstrap, kafka_settings.registry_topic, [(b"key:x", b"\xff")])
    mine = Settings.from_env(kafka_settings.to_env(), metrics_port=free_port())
    key = sluice(mine, "keys", "create", "--org", "acme", "--kind", "secret").stdout.strip()
    with running(mine, "gateway", f"{gateway_url(mine)}/readyz", tmp_path / "gateway.log"):
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{gateway_url(mine)}/api/events", data=solute_body(), headers={"X-Api-Key": key}
            ) as r:
                assert r.status == 200
            async with http.get(f"{gateway_url(mine)}/metrics") as public:
                assert public.status == 404
            async with http.get(f"http://{mine.gateway_host}:{mine.metrics_port}/metrics") as ops:
                text = await ops.text()
    assert "sluice_registry_records_skipped_total 1.0" in text and "sluice_registry_healthy 1.0" in text
