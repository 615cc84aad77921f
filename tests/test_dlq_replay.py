"""``sluice dlq replay`` keeps identity verification: a letter that may change a user of an org
that verifies identities is held back unless the operator vouches for it (issue 24, item 4: a
replay would otherwise apply an unproven identify that the gateway refused, without any check)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.deadletters import DlqRow
from pipeline.dlq import may_change_identity, replay
from pipeline.warehouse import ChdbWarehouse
from sluice.settings import Settings


def letter(family: str, route: str, payload: object, batch: object = None, org: str = "acme") -> DlqRow:
    return DlqRow(
        id=f"{family}:{route}:{msgspec.json.encode(payload).decode()}", org_id=org, family=family, route=route,
        source="gateway", reason="invalid", payload=msgspec.json.encode(payload).decode(), event_index=0,
        received_at=datetime(2026, 12, 4, 10, tzinfo=UTC), project_id="web", env="production",
        batch=msgspec.json.encode(batch or {}).decode(),
    )  # fmt: skip


IDENTITY = [
    letter("solute", "/api/events", {"type": "identify", "userId": "alice", "timestamp": "yesterday"}),
    letter("solute", "/api/events", {"type": "alias", "userId": "alice", "previousId": "bob"}),
    letter("solute", "/api/events", {"type": "group", "userId": "alice", "groupId": "g"}),
    letter("halo", "/api/sdk/users/identify", {"traits": {"plan": "pro"}}),
    letter("halo", "/api/sdk/events", {"event_type": "click"}, {"user_id": "alice"}),
    letter("posthog", "/batch", {"event": "$identify", "distinct_id": "alice"}),
    letter("posthog", "/batch", {"event": "pageview", "properties": {"$set": {"plan": "pro"}}}),
    letter("segment", "/v1/batch", {"type": "identify", "userId": "alice"}),
    letter("solute", "/api/events", "not an object"),
]
NO_ONE = [
    letter("solute", "/api/events", {"type": "track", "event": "Clicked", "userId": "alice"}),
    letter("halo", "/api/sdk/events", {"event_type": "click"}, {"session_id": "s"}),
    letter("xaiku", "/api/v1/analytics", {"eventName": "impression", "userId": "alice"}),
    letter("traffical", "/v1/events", {"type": "exposure", "unitKey": "alice"}),
]


def test_what_may_change_a_user() -> None:
    assert [may_change_identity(x) for x in IDENTITY] == [True] * len(IDENTITY)
    assert [may_change_identity(x) for x in NO_ONE] == [False] * len(NO_ONE)


@pytest.mark.kafka
@pytest.mark.clickhouse
async def test_replay_holds_identity_changes_of_verifying_orgs(
    kafka_settings: Settings, warehouse: ChdbWarehouse
) -> None:
    mine = [*IDENTITY[:2], NO_ONE[0]]
    other_org = letter("solute", "/api/events", {"type": "identify", "userId": "carol"}, org="other")
    warehouse.insert_json("dlq", msgspec.json.encode([*mine, other_org]))
    done = await replay(
        kafka_settings,
        warehouse,
        ids=[x.id for x in [*mine, other_org]],
        org_id=None,
        verified_orgs=frozenset({"acme"}),
    )
    assert sorted(done.held) == sorted(x.id for x in IDENTITY[:2])
    assert done.submitted == 2  # the track, and the identify of an org that does not verify
    consumer = AIOKafkaConsumer(
        kafka_settings.raw_topic, bootstrap_servers=kafka_settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        while len(got) < 2:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "the replayed letters did not reach the raw topic"
            got += [m.value for messages in batches.values() for m in messages]
    finally:
        await consumer.stop()
    sent = sorted(msgspec.json.decode(v)["events"][0]["type"] for v in got)
    assert sent == ["identify", "track"]
    vouched = await replay(
        kafka_settings, warehouse, ids=[IDENTITY[0].id], org_id=None, verified_orgs=frozenset({"acme"}),
        trust_identity=True,
    )  # fmt: skip
    assert (vouched.submitted, vouched.held) == (1, [])
