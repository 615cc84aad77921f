"""What every route shares: CORS, preflight, rate limits, origins, 503, errors, health, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import build_ops_app
from services.gateway.errors import error_body
from services.gateway.routes import CONFIG_ROUTES, PLAIN_ROUTES, ROUTE_FAMILY
from sluice.envelope import RawBatch
from tests.builders import (
    HALO_EXAMPLE,
    TRAFFICAL_EXAMPLE,
    XAIKU_CURL_EVENTS,
    halo_company,
    halo_user,
    solute_body,
)
from tests.gateway_harness import Harness, harness

Request = tuple[Callable[[str], dict[str, str]], Any]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


VALID: dict[str, Request] = {
    "/api/sdk/events": (bearer, HALO_EXAMPLE),
    "/api/sdk/users/identify": (bearer, halo_user()),
    "/api/sdk/companies/identify": (bearer, halo_company()),
    "/api/v1/analytics": (lambda k: {"X-public-key": k}, {"events": XAIKU_CURL_EVENTS}),
    "/api/events": (lambda k: {"X-Api-Key": k}, solute_body()),
    "/v1/events": (bearer, TRAFFICAL_EXAMPLE),
    "/v1/events/batch": (bearer, TRAFFICAL_EXAMPLE),
}
# Segment's and PostHog's routes (their keys in Basic or the body) have these tests in
# test_gateway_segment.py and test_gateway_posthog.py
assert VALID.keys() == {path for path, family in ROUTE_FAMILY.items() if family not in ("segment", "posthog")}


def any_key(h: Harness) -> str:
    """One key that every route accepts: publishable, with sdk:write, of the example's org."""
    return h.key("publishable", org="org_acme", scopes=("sdk:write",))


@pytest.mark.parametrize("path", VALID)
async def test_every_route_accepts_its_example_with_cors(gw: Harness, path: str) -> None:
    headers, body = VALID[path]
    response = await gw.post(path, body, **headers(any_key(gw)))
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert len(gw.raw()) == 1


@pytest.mark.parametrize("path", VALID)
async def test_every_route_answers_preflight(gw: Harness, path: str) -> None:
    response = await gw.client.options(
        path, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                       "Access-Control-Request-Headers": "authorization,content-type"},
    )  # fmt: skip
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert all(h in allowed for h in ("authorization", "content-type", "x-api-key", "x-public-key"))


@pytest.mark.parametrize("path", VALID)
async def test_every_route_is_503_with_retry_after_when_kafka_will_not_ack(gw: Harness, path: str) -> None:
    gw.sink.fail = True
    headers, body = VALID[path]
    response = await gw.post(path, body, **headers(any_key(gw)))
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert await response.json() == error_body(ROUTE_FAMILY[path], 503, "Service temporarily unavailable; retry later")


@pytest.mark.parametrize("path", VALID)
async def test_rate_limit_is_429_with_retry_after_per_key(path: str) -> None:
    async with harness(rate_limit=1, rate_burst=2) as h:
        headers, body = VALID[path]
        key, other = any_key(h), any_key(h)
        statuses = [(await h.post(path, body, **headers(key))).status for _ in range(2)]
        limited = await h.post(path, body, **headers(key))
        assert statuses == [200, 200]
        assert limited.status == 429 and limited.headers["Retry-After"] == "1"
        assert await limited.json() == error_body(ROUTE_FAMILY[path], 429, "Rate limit exceeded")
        assert (await h.post(path, body, **headers(other))).status == 200  # other keys unaffected
        h.now += 1.0  # a second later, one token is back
        assert (await h.post(path, body, **headers(key))).status == 200


async def test_allowed_origins_restrict_a_publishable_key(gw: Harness) -> None:
    key = gw.key(origins=("https://shop.example",))
    path, (headers, body) = "/api/events", VALID["/api/events"]
    allowed = await gw.post(path, body, Origin="https://shop.example", **headers(key))
    server_side = await gw.post(path, body, **headers(key))  # no Origin: not a browser
    other = await gw.post(path, body, Origin="https://evil.example", **headers(key))
    assert (allowed.status, server_side.status, other.status) == (200, 200, 401)
    assert await other.json() == {"error": "Origin not allowed for this API key"}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 429, 503])
@pytest.mark.parametrize("family", ["halo", "xaiku", "solute", "traffical"])
def test_error_shapes_table(family: str, status: int) -> None:
    body = error_body(family, status, "why")
    if family == "traffical":
        phrases = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                   413: "Request Entity Too Large", 429: "Too Many Requests", 503: "Service Unavailable"}  # fmt: skip
        assert body == {"error": phrases[status], "message": "why"}
    else:
        assert body == {"error": "why"}


async def test_unknown_route_and_method(gw: Harness) -> None:
    missing = await gw.client.post("/api/nope", data=b"{}")
    assert (missing.status, await missing.json()) == (404, {"error": "Not Found"})
    wrong = await gw.client.get("/v1/events")
    assert (wrong.status, await wrong.json()) == (
        405,
        {"error": "Method Not Allowed", "message": "Method Not Allowed"},
    )


async def test_health_readiness_and_metrics(gw: Harness) -> None:
    assert (await gw.client.get("/healthz")).status == 200
    assert await (await gw.client.get("/readyz")).json() == {"ready": True}
    key = any_key(gw)
    await gw.post("/api/events", solute_body(), **{"X-Api-Key": key})
    await gw.post("/v1/events", {"events": []}, **bearer(key))
    text = await (await gw.client.get("/metrics")).text()
    assert 'sluice_gateway_requests_total{route="/api/events",status="200"} 1.0' in text
    assert 'sluice_gateway_requests_total{route="/v1/events",status="400"} 1.0' in text
    assert 'sluice_gateway_events_total{family="solute",outcome="accepted",reason=""} 1.0' in text
    assert "sluice_gateway_produce_seconds_count 1.0" in text
    assert 'sluice_gateway_body_bytes_count{family="solute"} 1.0' in text


async def test_readyz_is_503_until_keys_are_loaded() -> None:
    async with harness() as h:
        h.gateway.ready = lambda: False
        response = await h.client.get("/readyz")
        assert (response.status, await response.json()) == (503, {"ready": False})


async def test_openapi_documents_every_route(gw: Harness) -> None:
    document = await (await gw.client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == set(ROUTE_FAMILY) | set(CONFIG_ROUTES) | set(PLAIN_ROUTES)
    for path in ROUTE_FAMILY:
        assert {"200", "400", "401", "413", "429", "503"} <= set(document["paths"][path]["post"]["responses"]), path
    for path in CONFIG_ROUTES:
        assert {"200", "304", "401", "404"} <= set(document["paths"][path]["get"]["responses"]), path


async def test_with_a_metrics_port_metrics_and_the_spec_leave_the_public_port() -> None:
    async with harness(metrics_port=9090) as h:
        assert [(await h.client.get(p)).status for p in ("/metrics", "/openapi.json", "/readyz")] == [404, 404, 200]
        async with TestClient(TestServer(build_ops_app(h.gateway))) as ops:
            assert [(await ops.get(p)).status for p in ("/metrics", "/openapi.json")] == [200, 200]
            assert "sluice_registry_healthy 1.0" in await (await ops.get("/metrics")).text()


async def test_every_event_lands_in_its_units_partition_with_its_index(gw: Harness) -> None:
    """The gateway's unit of an event (``sluice/wire``) is the normalizer's: the worker finds the
    unit's state where the event lands, and a request of many units becomes one record per
    partition, each event keeping its index (derived message ids do not move)."""
    from pipeline.canonical import CanonicalEvent
    from pipeline.normalize import normalize
    from sluice.routing import partition_of, unit_route
    from tests.builders import solute_event, traffical_event, xaiku_event

    key = gw.key(scopes=("sdk:write",))
    bearer = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    units = [f"unit-{n}" for n in range(12)]
    requests = [
        ("/api/events", {"batch": [solute_event(userId=u, messageId=None) for u in units]}, {"X-Api-Key": key}, True),
        ("/api/events", {"batch": [solute_event(userId=None, anonymousId=u) for u in units]}, {"X-Api-Key": key}, True),
        ("/v1/events/batch", {"events": [traffical_event(unitKey=u) for u in units]}, bearer, True),
        ("/api/v1/analytics", {"events": [xaiku_event(sessionId=u) for u in units]}, {"X-public-key": key}, True),
        ("/api/sdk/events", {**HALO_EXAMPLE, "user_id": None, "session_id": "s" * 300}, bearer, False),
        ("/api/sdk/users/identify", halo_user(user_id="unit-3"), bearer, False),
        ("/api/sdk/companies/identify", halo_company(), bearer, False),
    ]  # fmt: skip
    partitions = gw.gateway.settings.raw_partitions
    for path, body, headers, many in requests:
        gw.sink.records.clear()
        assert (await gw.post(path, body, **headers)).status < 300, path
        records = [(k, v) for t, k, v in gw.sink.records if t.endswith(".raw")]
        indexes: list[int] = []
        for record_key, value in records:
            batch = msgspec.json.decode(value, type=RawBatch)
            indexes += batch.indexes
            for event in normalize(batch):
                assert isinstance(event, CanonicalEvent), (path, event)
                assert record_key is not None
                assert partition_of(unit_route("acme", event.unit_key), partitions) == partition_of(
                    record_key, partitions
                )
        assert sorted(indexes) == list(range(len(indexes))), path
        expected = len({partition_of(unit_route("acme", u), partitions) for u in units}) if many else 1
        assert len(records) == expected > 0, path
