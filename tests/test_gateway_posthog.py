"""PostHog's capture API: routes, body shapes and encodings, tokens, answers, records; the start-up
calls; and what the worker makes of its events (ids, time, persons, aliases, groups, exposures)."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
import pytest

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize import normalize
from services.gateway.lzstring import LzError, decompress_from_base64
from sluice.envelope import RawBatch, body_digest
from sluice.registry import OrgSettings
from tests.builders import posthog_batch, posthog_event
from tests.gateway_harness import NOW, Harness, events_of

NODE_MODULES = Path(__file__).resolve().parents[1] / ".sluice" / "sdks" / "node" / "node_modules"


async def test_a_batch_is_recorded_exactly_and_answered_as_posthog_does(gw: Harness) -> None:
    body = posthog_batch(api_key=gw.key(prefix="phc_"))
    response = await gw.post("/batch/", body, **{"Content-Type": "application/json"})
    assert (response.status, await response.json()) == (200, {"status": 1})
    [record] = gw.raw()
    assert record == RawBatch(
        family="posthog", route="/batch/", org_id="acme", project_id="web", env="production", received_at=NOW,
        body_digest=body_digest(body), events=record.events, indexes=[0], sent_at="2025-01-15T10:30:05+00:00",
    )  # fmt: skip
    assert events_of(record) == [posthog_event()]
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/batch", "/e", "/e/", "/i/v0/e/", "/capture", "/track/", "/engage"])
async def test_every_route_and_body_shape(gw: Harness, path: str) -> None:
    token = gw.key(prefix="phc_")
    shapes: list[Any] = [
        {"batch": [posthog_event()], "token": token},
        [posthog_event(token=token)],
        posthog_event(api_key=token),
        posthog_event(properties={**posthog_event()["properties"], "token": token}),
        posthog_event(**{"$token": token}),
    ]
    for shape in shapes:
        response = await gw.post(path, shape)
        assert (response.status, await response.json()) == (200, {"status": 1}), shape
    assert len(gw.raw()) == len(shapes)
    assert all(events_of(record) == [posthog_event()] for record in gw.raw())  # the token taken out
    assert not [r for _, _, r in gw.sink.records if token.encode() in r]


async def test_encodings(gw: Harness) -> None:
    token = gw.key(prefix="phc_")
    body = posthog_batch(api_key=token)
    plain = {"Content-Type": "text/plain"}
    lz = _lz_compress(body.decode())
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("/e/", gzip.compress(body), plain),  # posthog-js: gzip as text/plain, nothing said
        ("/e/?compression=gzip-js", gzip.compress(body), plain),
        ("/batch/", gzip.compress(body), {"Content-Encoding": "gzip"}),
        ("/e/?compression=base64", base64.b64encode(body), plain),
        ("/e/", base64.b64encode(body), plain),  # all-base64, unnamed
        ("/e/?compression=lz64", lz.encode(), plain),
        ("/e/", urlencode({"data": base64.b64encode(body).decode()}).encode(),
         {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/e/", b"compression=lz64&data=" + quote(lz, safe="+").encode(),
         {"Content-Type": "application/x-www-form-urlencoded"}),  # '+' arrives as a space
    ]  # fmt: skip
    for path, data, headers in cases:
        response = await gw.client.post(path, data=data, headers=headers)
        assert (path, response.status) == (path, 200), await response.text()
    response = await gw.client.get("/e/", params={"data": base64.b64encode(body).decode(), "ver": "1.0"})
    assert response.status == 200
    assert all(events_of(r) == [posthog_event()] for r in gw.raw()) and len(gw.raw()) == len(cases) + 1


async def test_beacon_answers_204_and_the_clients_clock_comes_from_the_underscore(gw: Harness) -> None:
    body = msgspec.json.encode({"api_key": gw.key(prefix="phc_"), "batch": [posthog_event()]})
    response = await gw.client.post("/e/?beacon=1&_=1736933400000", data=gzip.compress(body))
    assert response.status == 204
    assert gw.raw()[0].sent_at == "2025-01-15T09:30:00+00:00"


@pytest.mark.parametrize(
    ("body", "status", "why"),
    [
        (b"{not json", 400, "Request body must be"),
        (b"\x1f\x8b\x08garbage", 400, "not valid gzip"),
        (posthog_batch(posthog_event(event=None)), 400, "event name is required"),
        (posthog_batch(posthog_event(distinct_id=None)), 400, "distinct_id is required"),
        (posthog_batch(posthog_event(distinct_id="")), 400, "distinct_id is required"),
        (posthog_batch(batch=[]), 400, "no events"),
        (msgspec.json.encode([posthog_event()]), 401, "Missing project token"),
        (posthog_batch(api_key="phx_personal"), 401, "personal API key"),
        (posthog_batch(api_key="phc_unknown"), 401, "Invalid"),
        (msgspec.json.encode([posthog_event(token="a"), posthog_event(token="b")]), 400, "different tokens"),
    ],
)
async def test_refusals(gw: Harness, body: bytes, status: int, why: str) -> None:
    token = gw.key(prefix="phc_")
    if body.startswith(b'{"') and b"api_key" not in body:
        body = msgspec.json.encode({**msgspec.json.decode(body), "api_key": token})
    response = await gw.client.post("/batch/", data=body)
    assert response.status == status
    assert why in (await response.json())["error"]
    assert gw.raw() == []


async def test_too_large_is_413_and_kafka_down_503(gw: Harness) -> None:
    token = gw.key(prefix="phc_")
    big = posthog_batch(posthog_event(properties={"x": "y" * 2_000_000}), api_key=token)
    assert (await gw.client.post("/batch/", data=gzip.compress(big))).status == 413
    gw.sink.fail = True
    response = await gw.client.post("/batch/", data=posthog_batch(api_key=token))
    assert response.status == 503 and response.headers["Retry-After"]


async def test_identity_verification_refuses_unproven_person_changes(gw: Harness) -> None:
    gw.org(OrgSettings(org_id="acme", identity_verification=True, identity_secret="s" * 32))
    identify = posthog_event(event="$identify", properties={"$set": {"plan": "pro"}})
    response = await gw.client.post("/batch/", data=posthog_batch(identify, api_key=gw.key(prefix="phc_")))
    assert response.status == 403 and gw.raw() == []
    response = await gw.client.post("/batch/", data=posthog_batch(identify, api_key=gw.key("secret")))
    assert response.status == 200


async def test_start_up_calls_answer_minimal_bodies(gw: Harness) -> None:
    for method, path in [("POST", "/flags/?v=2"), ("GET", "/flags"), ("POST", "/decide/?v=3"), ("GET", "/decide/")]:
        response = await gw.client.request(method, path, data=b'{"token": "phc_x", "distinct_id": "u"}')
        assert (path, response.status) == (path, 200)
        answer = await response.json()
        assert answer["flags"] == answer["featureFlags"] == {} and answer["errorsWhileComputingFlags"] is False
    response = await gw.client.get("/array/phc_x/config")
    assert response.status == 200 and (await response.json())["supportedCompression"] == ["gzip", "gzip-js"]
    script = await (await gw.client.get("/array/phc_x%22%3B/config.js")).text()  # the token as a JSON string
    assert script.startswith("window._POSTHOG_REMOTE_CONFIG = ")
    assert 'window._POSTHOG_REMOTE_CONFIG["phc_x\\";"]' in script
    preflight = await gw.client.options(
        "/e/", headers={"Origin": "http://page.test", "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "content-type"},
    )  # fmt: skip
    assert preflight.status == 204 and preflight.headers["Access-Control-Allow-Origin"] == "*"


# --- lz-string ----------------------------------------------------------------------------------


def _lz_compress(text: str) -> str:
    """lz-string's own compressToBase64, from the npm package (tests/clients/sdks)."""
    if not (NODE_MODULES / "lz-string").is_dir():
        pytest.skip("the npm packages are not installed (tests/clients/sdks/install.sh)")
    script = (
        "const lz=require('lz-string');process.stdout.write(lz.compressToBase64(require('fs').readFileSync(0,'utf8')))"
    )
    done = subprocess.run(["node", "-e", script], input=text, capture_output=True, text=True, check=True,
                          env={"NODE_PATH": str(NODE_MODULES), "PATH": "/usr/bin:/usr/local/bin"})  # fmt: skip
    return done.stdout


def test_lz_string_decompresses_what_the_npm_package_compresses() -> None:
    texts = ["a", "abababababababab", json.dumps({"k": "héllo 😀 " * 40, "n": list(range(300))}), "\u0100" * 5]
    for text in texts:
        assert decompress_from_base64(_lz_compress(text), 1_000_000) == text
    with pytest.raises(LzError):
        decompress_from_base64(_lz_compress("x" * 10_000), 1_000)
    with pytest.raises(LzError):
        decompress_from_base64("!!!", 1_000)


# --- the worker's side --------------------------------------------------------------------------


def posthog_record(*events: dict[str, Any], route: str = "/batch/", sent_at: str | None = None) -> RawBatch:
    return RawBatch(
        family="posthog", route=route, org_id="acme", project_id="web", env="production", received_at=NOW,
        body_digest="d", events=[msgspec.Raw(msgspec.json.encode(e)) for e in events],
        indexes=list(range(len(events))), sent_at=sent_at,
    )  # fmt: skip


def rows(record: RawBatch) -> list[CanonicalEvent]:
    out = normalize(record)
    assert not [r for r in out if isinstance(r, Invalid)]
    return [r for r in out if isinstance(r, CanonicalEvent)]


def test_ids_and_time() -> None:
    # the client's clock is 1 h behind: stamped 09:30:00, sent 09:30:05, received 10:30:05
    [row] = rows(posthog_record(posthog_event(timestamp="2025-01-15T09:30:00Z"), sent_at="2025-01-15T09:30:05Z"))
    assert row.timestamp.isoformat() == "2025-01-15T10:30:00+00:00"
    assert (row.message_id, row.user_id, row.unit_key, row.type) == (posthog_event()["uuid"], "user_123", "user_123",
                                                                     "track")  # fmt: skip
    ignored = posthog_event(timestamp="2025-01-15T09:30:00Z", properties={"$ignore_sent_at": True})
    [row] = rows(posthog_record(ignored, sent_at="2025-01-15T09:30:05Z"))
    assert row.timestamp.isoformat() == "2025-01-15T09:30:00+00:00"
    [row] = rows(posthog_record(posthog_event(timestamp=None, offset=5000)))
    assert row.timestamp.isoformat() == "2025-01-15T10:30:00+00:00"
    # no uuid: an id from the event's bytes and place, the same however the request's sent_at moved
    first = rows(posthog_record(posthog_event(uuid=None, distinct_id=42), sent_at="2025-01-15T09:30:05Z"))[0]
    retry = rows(posthog_record(posthog_event(uuid=None, distinct_id=42), sent_at="2025-01-15T09:31:05Z"))[0]
    assert first.message_id == retry.message_id and first.user_id == "42"
    anonymous = posthog_event(properties={"$process_person_profile": False, "$session_id": "s1"})
    [row] = rows(posthog_record(anonymous))
    assert (row.user_id, row.anonymous_id, row.session_id) == ("", "user_123", "s1")


def test_persons_aliases_groups_and_exposures() -> None:
    identify, alias, set_, created, group, flag, page = rows(posthog_record(
        posthog_event(event="$identify", uuid="1", properties={
            "$set": {"plan": "pro"}, "$set_once": {"first": "a", "plan": "free"}, "$anon_distinct_id": "anon-1"}),
        posthog_event(event="$set", uuid="2", properties={"$set": {"seats": 3}}),
        posthog_event(event="$create_alias", uuid="3", properties={"alias": "old-id", "distinct_id": "user_123"}),
        posthog_event(event="$groupidentify", uuid="4", distinct_id="$company_acme", properties={
            "$group_type": "company", "$group_key": "acme-inc", "$group_set": {"name": "Acme"}}),
        posthog_event(event="$feature_flag_called", uuid="5", properties={
            "$feature_flag": "new-checkout", "$feature_flag_response": "test"}),
        posthog_event(event="$pageview", uuid="6", properties={"$current_url": "https://shop.test/"}),
    ))  # fmt: skip
    assert (identify.type, identify.user_id, msgspec.json.decode(identify.traits)) == (
        "identify", "user_123", {"first": "a", "plan": "pro"})  # fmt: skip
    assert (alias.type, alias.previous_id, alias.user_id, alias.message_id) == (
        "alias",
        "anon-1",
        "user_123",
        "1:alias",
    )
    assert (set_.type, msgspec.json.decode(set_.traits)) == ("identify", {"seats": 3})
    assert (created.type, created.previous_id, created.user_id) == ("alias", "old-id", "user_123")
    assert (group.type, group.group_id, group.user_id) == ("group", "acme-inc", "")
    assert msgspec.json.decode(group.traits) == {"name": "Acme", "$group_type": "company"}
    assert (flag.type, flag.experiment_id, flag.variant_id) == ("exposure", "new-checkout", "test")
    assert (page.type, page.page_url) == ("page", "https://shop.test/")
    [engage] = rows(
        posthog_record({"$distinct_id": "u9", "$token": "phc_x", "$set": {"email": "a@b.c"}}, route="/engage/")
    )
    assert (engage.type, engage.event, engage.user_id) == ("identify", "$identify", "u9")
    assert msgspec.json.decode(engage.traits) == {"email": "a@b.c"}


async def test_rate_limit_and_metrics_per_family() -> None:
    from tests.gateway_harness import harness

    async with harness(rate_limit=1, rate_burst=1) as gw:
        body = posthog_batch(api_key=gw.key(prefix="phc_"))
        assert (await gw.client.post("/e/", data=body)).status == 200
        limited = await gw.client.post("/e/", data=body)
        assert limited.status == 429 and limited.headers["Retry-After"] == "1"
        text = await (await gw.client.get("/metrics")).text()
        assert 'sluice_gateway_requests_total{route="/e/",status="429"} 1.0' in text
        assert 'sluice_gateway_events_total{family="posthog",outcome="accepted",reason=""} 1.0' in text
