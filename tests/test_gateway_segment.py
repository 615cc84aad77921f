"""Segment's HTTP Tracking API: routes, auth, limits, answers, records; and what the worker makes
of its events (time, batch-level context, users, groups, aliases, exposures)."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import msgspec
import pytest

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize import normalize
from sluice.envelope import RawBatch, body_digest
from sluice.registry import OrgSettings
from sluice.wire.segment import CALL_LIMIT
from tests.builders import segment_batch, segment_event
from tests.gateway_harness import NOW, Harness, events_of


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


async def test_a_batch_with_basic_auth_is_recorded_exactly_and_answered_as_segment_does(gw: Harness) -> None:
    key = gw.key()
    body = segment_batch()
    response = await gw.post("/v1/batch", body, Authorization=basic(key), **{"Content-Type": "application/json"})
    assert (response.status, await response.json()) == (200, {"success": True})
    [record] = gw.raw()
    assert record == RawBatch(
        family="segment", route="/v1/batch", org_id="acme", project_id="web", env="production", received_at=NOW,
        body_digest=body_digest(body), events=record.events, indexes=[0], sent_at="2025-01-15T10:30:05+00:00",
    )  # fmt: skip
    assert events_of(record) == [segment_event()]
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t"])
async def test_a_single_call_takes_its_type_from_the_route_and_its_key_from_the_body(gw: Harness, path: str) -> None:
    event = segment_event(type=None, writeKey=gw.key())
    response = await gw.post(path, event, **{"Content-Type": "text/plain"})
    assert (response.status, await response.json()) == (200, {"success": True})
    [record] = gw.raw()
    assert events_of(record) == [segment_event(type=None)]  # the key taken out
    [row] = normalize(record)
    assert isinstance(row, CanonicalEvent) and (row.type, row.event, row.family) == (
        "track",
        "Order Completed",
        "segment",
    )


async def test_every_route_answers(gw: Harness) -> None:
    key = gw.key()
    calls = {
        "identify": segment_event(type=None, event=None, traits={"plan": "pro"}),
        "page": segment_event(type=None, event=None, name="Home"),
        "screen": segment_event(type=None, event=None, name="Home"),
        "group": segment_event(type=None, event=None, groupId="acme-inc", traits={"seats": 5}),
        "alias": segment_event(type=None, event=None, previousId="anon_456"),
    }
    for name, event in calls.items():
        for path in (f"/v1/{name}", f"/v1/{name[0]}"):
            response = await gw.post(path, event, Authorization=basic(key))
            assert (path, response.status) == (path, 200)
    for path in ("/v1/b", "/v1/import"):
        assert (await gw.post(path, segment_batch(), Authorization=basic(key))).status == 200
    rows = [r for record in gw.raw() for r in normalize(record)]
    assert [r.type for r in rows if isinstance(r, CanonicalEvent)] == [
        "identify", "identify", "page", "page", "screen", "screen", "group", "group", "alias", "alias", "track", "track"
    ]  # fmt: skip
    assert gw.dead() == []


async def test_gzip_bodies(gw: Harness) -> None:
    body = gzip.compress(segment_batch())
    response = await gw.post("/v1/batch", body, Authorization=basic(gw.key()), **{"Content-Encoding": "gzip"})
    assert response.status == 200
    assert events_of(gw.raw()[0]) == [segment_event()]


async def test_events_segment_would_drop_are_dead_letters_and_the_answer_is_still_200(gw: Harness) -> None:
    body = segment_batch(
        segment_event(messageId="a"),
        segment_event(messageId="b", userId=None, anonymousId=None),
        segment_event(messageId="c", event=None),
        segment_event(messageId="d", type="launch"),
    )
    response = await gw.post("/v1/batch", body, Authorization=basic(gw.key()))
    assert (response.status, await response.json()) == (200, {"success": True})
    [record] = gw.raw()
    assert record.indexes == [0]
    assert [(d.index, d.reason) for d in gw.dead()] == [
        (1, "userId or anonymousId is required"),
        (2, "track events require 'event'"),
        (3, "Invalid enum value 'launch' - at `$.type`"),
    ]


async def test_a_call_without_any_id_is_answered_200_and_kept_nowhere_but_the_dead_letters(gw: Harness) -> None:
    key = gw.key()
    response = await gw.post("/v1/t", segment_event(userId=None, anonymousId=None, writeKey=key))
    assert (response.status, await response.json()) == (200, {"success": True})
    assert gw.raw() == []
    assert [d.reason for d in gw.dead()] == ["userId or anonymousId is required"]
    assert not [r for _, _, r in gw.sink.records if key.encode() in r]


@pytest.mark.parametrize(
    ("path", "body", "why"),
    [
        ("/v1/track", b"{not json", "must be a JSON object"),
        ("/v1/batch", b'{"batch": 3}', "Invalid request body"),
        ("/v1/track", msgspec.json.encode(segment_event(properties={"x": "y" * CALL_LIMIT})), "too large"),
        ("/v1/batch", segment_batch(*[{"type": "track", "event": "e", "userId": "u"}] * 2_501), "at most 2500"),
        ("/v1/batch", segment_batch(segment_event(properties={"x": "y" * CALL_LIMIT})), "over 32768 bytes"),
        ("/v1/batch", segment_batch(*[segment_event(properties={"x": "y" * 30_000})] * 18), "too large"),
        ("/v1/batch", segment_batch(context=[1]), "context must be an object"),
    ],
)
async def test_invalid_json_and_oversize_are_400(gw: Harness, path: str, body: bytes, why: str) -> None:
    response = await gw.post(path, body, Authorization=basic(gw.key()))
    assert response.status == 400
    assert why in (await response.json())["error"]
    assert gw.raw() == [] and gw.dead() == []


async def test_keys(gw: Harness) -> None:
    event = segment_event()
    assert (await gw.post("/v1/track", event)).status == 401
    assert (await gw.post("/v1/track", event, Authorization=basic("nope"))).status == 401
    assert (await gw.post("/v1/track", event, Authorization="Basic !!!")).status == 401
    assert (await gw.post("/v1/track", segment_event(writeKey="nope"))).status == 401
    revoked = gw.key(expires_in=1)
    assert (await gw.post("/v1/track", event, Authorization=basic(revoked))).status == 401
    # a bearer token (Segment's OAuth) is not the write key: the body's writeKey is
    response = await gw.post("/v1/track", segment_event(writeKey=gw.key("secret")), Authorization="Bearer oauth")
    assert response.status == 200


async def test_over_the_rate_is_429_with_retry_after() -> None:
    from tests.gateway_harness import harness

    async with harness(rate_limit=1, rate_burst=1) as gw:
        key = gw.key()
        assert (await gw.post("/v1/track", segment_event(), Authorization=basic(key))).status == 200
        response = await gw.post("/v1/track", segment_event(), Authorization=basic(key))
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1


async def test_kafka_down_is_503(gw: Harness) -> None:
    gw.sink.fail = True
    response = await gw.post("/v1/batch", segment_batch(), Authorization=basic(gw.key()))
    assert response.status == 503 and response.headers["Retry-After"]


async def test_identity_verification_refuses_unproven_person_changes_from_publishable_keys(gw: Harness) -> None:
    gw.org(OrgSettings(org_id="acme", identity_verification=True, identity_secret="s" * 32))
    identify = segment_event(type="identify", event=None, traits={"plan": "pro"})
    response = await gw.post("/v1/identify", identify, Authorization=basic(gw.key()))
    assert response.status == 403
    body = segment_batch(segment_event(messageId="t"), segment_event(messageId="i", type="identify"))
    response = await gw.post("/v1/batch", body, Authorization=basic(gw.key()))
    assert response.status == 200
    assert [e["messageId"] for r in gw.raw() for e in events_of(r)] == ["t"]
    assert gw.dead() == []  # refused, not dead-lettered: a replay would skip the check
    assert (await gw.post("/v1/identify", identify, Authorization=basic(gw.key("secret")))).status == 200


# --- the worker's side ------------------------------------------------------------------------


def segment_record(*events: dict[str, Any], route: str = "/v1/batch", **batch: Any) -> RawBatch:
    return RawBatch(
        family="segment", route=route, org_id="acme", project_id="web", env="production", received_at=NOW,
        body_digest="d", events=[msgspec.Raw(msgspec.json.encode(e)) for e in events],
        indexes=list(range(len(events))), sent_at=batch.pop("sent_at", None),
        batch={k: msgspec.Raw(msgspec.json.encode(v)) for k, v in batch.items()},
    )  # fmt: skip


def rows(record: RawBatch) -> list[CanonicalEvent]:
    out = normalize(record)
    assert not [r for r in out if isinstance(r, Invalid)]
    return [r for r in out if isinstance(r, CanonicalEvent)]


def test_time_is_corrected_for_the_clients_clock_and_its_own_is_kept() -> None:
    # the client's clock is 1 h behind: it stamped 09:30:00 and sent at 09:30:05; received 10:30:05
    event = segment_event(timestamp="2025-01-15T09:30:00Z")
    [row] = rows(segment_record(event, sent_at="2025-01-15T09:30:05Z"))
    assert row.timestamp.isoformat() == "2025-01-15T10:30:00+00:00"
    assert msgspec.json.decode(row.context)["originalTimestamp"] == "2025-01-15T09:30:00Z"
    # analytics.js: originalTimestamp and sentAt in each event
    event = segment_event(timestamp=None, originalTimestamp="2025-01-15T09:30:00Z", sentAt="2025-01-15T09:30:01Z")
    [row] = rows(segment_record(event, sent_at="2025-01-15T09:30:05Z"))
    assert row.timestamp.isoformat() == "2025-01-15T10:30:04+00:00"
    # no sentAt: the timestamp as it is
    [row] = rows(segment_record(segment_event(timestamp="2025-01-15T09:30:00Z")))
    assert row.timestamp.isoformat() == "2025-01-15T09:30:00+00:00"


def test_batch_context_and_integrations_are_merged_into_each_item() -> None:
    event = segment_event(context={"ip": "1.2.3.4", "locale": "fr"}, integrations={"All": False})
    [row] = rows(segment_record(event, context={"locale": "en", "app": {"name": "shop"}}, integrations={"X": True}))
    context = msgspec.json.decode(row.context)
    assert context["locale"] == "fr" and context["app"] == {"name": "shop"} and context["ip"] == "1.2.3.4"
    assert context["integrations"] == {"X": True, "All": False}


def test_users_groups_aliases_and_exposures() -> None:
    identify, group, alias, viewed, track = rows(segment_record(
        segment_event(type="identify", event=None, messageId="1", traits={"plan": "pro"}),
        segment_event(type="group", event=None, messageId="2", groupId=42, traits={"seats": 5}),
        segment_event(type="alias", event=None, messageId="3", previousId="anon_456"),
        segment_event(event="Experiment Viewed", messageId="4", properties={
            "experiment_id": "exp_checkout", "experiment_name": "Checkout", "variation_id": 1,
            "variation_name": "Blue"}),
        segment_event(messageId="5", userId=7),
    ))  # fmt: skip
    assert (identify.type, identify.user_id, msgspec.json.decode(identify.traits)) == (
        "identify",
        "user_123",
        {"plan": "pro"},
    )
    assert (group.type, group.group_id, msgspec.json.decode(group.traits)) == ("group", "42", {"seats": 5})
    assert (alias.type, alias.previous_id, alias.user_id) == ("alias", "anon_456", "user_123")
    assert (viewed.type, viewed.experiment_id, viewed.variant_id, viewed.event) == (
        "exposure",
        "exp_checkout",
        "1",
        "Experiment Viewed",
    )
    assert (track.type, track.user_id, track.unit_key, track.message_id) == ("track", "7", "7", "5")
    named = rows(segment_record(segment_event(event="Experiment Viewed", properties={
        "experiment_name": "Checkout", "variation_name": "Blue"})))  # fmt: skip
    assert (named[0].experiment_id, named[0].variant_id) == ("Checkout", "Blue")


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t", "/v1/batch", "/v1/b", "/v1/import"])
async def test_preflight_and_metrics_per_family(gw: Harness, path: str) -> None:
    preflight = await gw.client.options(
        path, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                       "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    body = segment_batch() if path in ("/v1/batch", "/v1/b", "/v1/import") else msgspec.json.encode(segment_event())
    assert (await gw.post(path, body, Authorization=basic(gw.key()))).status == 200
    text = await (await gw.client.get("/metrics")).text()
    assert f'sluice_gateway_requests_total{{route="{path}",status="200"}} 1.0' in text
    assert 'sluice_gateway_events_total{family="segment",outcome="accepted",reason=""} 1.0' in text
