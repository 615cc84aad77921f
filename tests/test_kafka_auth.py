"""Sluice's Kafka settings against a broker as the prod overlay runs one — TLS, SASL/SCRAM-SHA-512,
ACLs checked by Kafka's StandardAuthorizer — with the gateway's least-privilege ACLs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from commands.localkafka import LocalKafka
from services.gateway.sink import KafkaSink, SinkUnavailable
from sluice.kafkaconf import kafka_security
from sluice.registry import OrgSettings, key_record, new_key, org_record
from sluice.registry_topic import RegistryFollower, write_records
from sluice.settings import Settings
from sluice.topics import ensure_topics
from tests.processes import local_broker
from tests.tlscerts import make_certificates

pytestmark = pytest.mark.kafka
PASSWORDS = {name: secrets.token_urlsafe(12) for name in ("admin", "gateway", "stranger", "worker", "keda")}


@pytest.fixture
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalKafka]:
    request.getfixturevalue("kafka_bootstrap")  # the marker check; this test brings its own broker
    tls = make_certificates(tmp_path / "tls")
    with local_broker(tmp_path / "kafka", PASSWORDS, tls) as broker:
        yield broker


def as_user(broker: LocalKafka, user: str, password: str | None = None) -> Settings:
    return Settings.from_env(
        {}, kafka_bootstrap=broker.bootstrap, topic_prefix="secured.", kafka_security_protocol="SASL_SSL",
        kafka_ca_file=str(broker.tls[1]) if broker.tls else "", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_username=user, kafka_password=password or PASSWORDS[user],
    )  # fmt: skip


async def test_each_component_gets_only_what_its_acls_allow(secured: LocalKafka) -> None:
    admin, gateway, stranger = (as_user(secured, u) for u in ("admin", "gateway", "stranger"))
    await ensure_topics(admin)
    secured.add_acls("--allow-principal", "User:gateway", "--operation", "Write", "--operation", "Describe",
                     "--topic", admin.raw_topic, "--topic", admin.dlq_topic)  # fmt: skip
    secured.add_acls("--allow-principal", "User:gateway", "--operation", "Read", "--operation", "Describe",
                     "--topic", admin.registry_topic)  # fmt: skip
    key, record = new_key("acme", "publishable")
    await write_records(admin.kafka_bootstrap, admin.registry_topic, [key_record(record)], kafka_security(admin))

    await ensure_topics(gateway)  # may not create topics: goes on (the operator declares them)
    sink = KafkaSink(gateway.kafka_bootstrap, 5.0, security=kafka_security(gateway))
    await sink.start()
    try:
        await sink.send_all([(gateway.raw_topic, b"acme", b"{}"), (gateway.dlq_topic, None, b"{}")])
    finally:
        await sink.stop()
    follower = RegistryFollower(gateway.kafka_bootstrap, gateway.registry_topic, security=kafka_security(gateway))
    await follower.start()
    try:
        await asyncio.wait_for(follower.ready.wait(), 20)
        assert follower.registry.authenticate(key) == record
    finally:
        await follower.stop()

    with pytest.raises(KafkaError):  # the gateway may not write the registry: no minting keys
        await asyncio.wait_for(write_records(
            gateway.kafka_bootstrap, gateway.registry_topic,
            [org_record(OrgSettings(org_id="acme", identity_verification=False))], kafka_security(gateway),
        ), 20)  # fmt: skip
    for refused in (stranger, as_user(secured, "gateway", "wrong-password")):
        sink = KafkaSink(refused.kafka_bootstrap, 3.0, security=kafka_security(refused))
        with pytest.raises((KafkaError, SinkUnavailable)):
            await sink.start()
            try:
                await sink.send_all([(refused.raw_topic, b"acme", b"{}")])
            finally:
                await sink.stop()


# In about one full run in three, a socket with no peer is left to the collector during this test
# (the garbage fixture pins it here; before it, it surfaced in the next tests); run alone, it never
# is, and its origin is not found yet. It is the test process's, not the worker's (a separate
# process): only that warning, only here.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings(  # the same socket, still wrapped in its asyncio transport
    "ignore:Exception ignored in. <function _SelectorTransport.__del__:pytest.PytestUnraisableExceptionWarning"
)
async def test_the_worker_runs_with_only_its_prod_acls(secured: LocalKafka, tmp_path: Path) -> None:
    """The worker's ACLs of the prod overlay (``deploy/k8s/overlays/prod/kafka.yaml``): its topics,
    its transactional ids and its group, nothing else — and a record goes all the way to a row."""
    import time

    import msgspec

    from commands.localkafka import free_port
    from sluice.envelope import RawBatch, encoder
    from tests.builders import solute_event
    from tests.processes import query_rows, spawn, wait_http

    admin = as_user(secured, "admin")
    port = free_port()
    worker = Settings.from_env(
        as_user(secured, "worker").to_env(), home=str(tmp_path / "home"), worker_port=port,
        worker_url=f"http://127.0.0.1:{port}", clickhouse_database=f"secured_{secrets.token_hex(4)}",
    )  # fmt: skip
    await ensure_topics(admin)
    for operations, topics in (
        (("Read", "Describe"), [admin.raw_topic]),
        (("Read", "Write", "Describe"), [admin.keyed_topic, worker.state_topic, admin.dlq_topic]),
    ):
        secured.add_acls("--allow-principal", "User:worker", *[a for o in operations for a in ("--operation", o)],
                         *[a for t in topics for a in ("--topic", t)])  # fmt: skip
    secured.add_acls(
        "--allow-principal",
        "User:worker",
        "--operation",
        "Write",
        "--operation",
        "Describe",
        "--transactional-id",
        f"{worker.worker_group}.",
        "--resource-pattern-type",
        "prefixed",
    )
    secured.add_acls("--allow-principal", "User:worker", "--operation", "Read", "--operation", "Describe",
                     "--group", worker.worker_group, "--resource-pattern-type", "prefixed")  # fmt: skip
    process = spawn(worker, "worker", tmp_path / "worker.log")
    try:
        await asyncio.to_thread(wait_http, f"{worker.worker_url}/healthz", 60, process)
        batch = RawBatch(
            family="solute",
            route="/api/events",
            org_id="acme",
            project_id="default",
            env="production",
            received_at=time.time(),
            body_digest="d" * 64,
            events=[msgspec.Raw(msgspec.json.encode(solute_event(messageId="secured-1")))],
            indexes=[0],
        )
        sink = KafkaSink(admin.kafka_bootstrap, 10.0, security=kafka_security(admin))
        await sink.start()
        try:
            await sink.send_all([(admin.raw_topic, b"acme", encoder.encode(batch))])
        finally:
            await sink.stop()
        deadline = time.monotonic() + 60
        while not query_rows(worker, "SELECT message_id FROM events FINAL"):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            await asyncio.sleep(0.5)
        assert query_rows(worker, "SELECT message_id FROM events FINAL") == [{"message_id": "secured-1"}]

        # KEDA's user of the prod overlay (sluice-keda): it reads the group's lag, and no record.
        keda = as_user(secured, "keda")
        secured.add_acls("--allow-principal", "User:keda", "--operation", "Describe", "--topic", admin.raw_topic)
        secured.add_acls("--allow-principal", "User:keda", "--operation", "Describe", "--group", worker.worker_group)
        while (lag := await group_lag(keda, worker.worker_group, admin.raw_topic)) != 0:
            assert time.monotonic() < deadline + 30, f"lag {lag}"  # the commit follows the row
            await asyncio.sleep(0.5)
        with pytest.raises(KafkaError):
            await read_one(keda, admin.raw_topic)
    finally:
        from commands.devrun import terminate

        terminate(process)


async def group_lag(settings: Settings, group: str, topic: str) -> int:
    """What KEDA's Kafka scaler reads: the group's committed offsets (OffsetFetch) against the
    topic's end offsets (ListOffsets); a partition with no committed offset counts from 0."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    security = kafka_security(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **security)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert tps, described
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **security)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())


async def read_one(settings: Settings, topic: str) -> None:
    """Fetch from ``topic`` (raises when the user may not read it)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
                                **kafka_security(settings))  # fmt: skip
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        for _ in range(10):
            if await consumer.getmany(timeout_ms=500):
                return
    finally:
        await consumer.stop()
