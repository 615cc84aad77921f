"""``POST /v1/events`` and ``/v1/events/batch`` (Traffical): scopes, partial success, shapes."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from sluice.envelope import RawBatch, body_digest
from tests.builders import TRAFFICAL_EXAMPLE, encode, traffical_event, traffical_schema_events
from tests.gateway_harness import NOW, Harness, events_of

PATHS = ["/v1/events", "/v1/events/batch"]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


@pytest.fixture
def sk(gw: Harness) -> str:
    return gw.key("secret", org="org_acme", prefix="traffical_sk_", scopes=("sdk:write",))


@pytest.mark.parametrize("path", PATHS)
async def test_example_is_recorded_exactly(gw: Harness, sk: str, path: str) -> None:
    body = encode(TRAFFICAL_EXAMPLE)
    response = await gw.post(path, body, **auth(sk))
    assert (response.status, await response.json()) == (200, {"accepted": 2, "written": 2})
    [record] = gw.raw()
    assert record == RawBatch(
        family="traffical", route=path, org_id="org_acme", project_id="web", env="production",
        received_at=NOW, body_digest=body_digest(body), events=record.events, indexes=[0, 1],
    )  # fmt: skip
    assert events_of(record) == TRAFFICAL_EXAMPLE["events"]


async def test_browser_sdk_publishable_key_with_scope(gw: Harness) -> None:
    pk = gw.key("publishable", org="org_acme", prefix="pk_", scopes=("sdk:write",))
    events = [traffical_event(0, unitKey=f"u{i}") for i in range(10)]
    response = await gw.post("/v1/events/batch", {"events": events}, **auth(pk))
    assert (response.status, await response.json()) == (200, {"accepted": 10, "written": 10})


async def test_real_sdk_extras_are_kept(gw: Harness, sk: str) -> None:
    track = traffical_event(1, id="evt_1", value=49.99, attribution=[{"policyId": "p", "allocationName": "a"}],
                            assignments={"layer_checkout": "treatment"})  # fmt: skip
    decision = traffical_event(0, type="decision", latencyMs=3.2, id="dec_evt")
    response = await gw.post("/v1/events", {"events": [track, decision]}, **auth(sk))
    assert (response.status, await response.json()) == (200, {"accepted": 2, "written": 2})
    assert events_of(gw.raw()[0]) == [track, decision]


async def test_partial_success_counts_valid_events_and_dead_letters_the_rest(gw: Harness, sk: str) -> None:
    events = [
        traffical_event(0),
        traffical_event(0, layers=None),
        traffical_event(1, event=None),
        traffical_event(0, type="impression"),
        traffical_event(1),
    ]
    response = await gw.post("/v1/events", {"events": events}, **auth(sk))
    assert (response.status, await response.json()) == (200, {"accepted": 2, "written": 2})
    assert gw.raw()[0].indexes == [0, 4]
    assert [(d.index, d.reason) for d in gw.dead()] == [
        (1, "Object missing required field `layers`"),
        (2, "Object missing required field `event`"),
        (3, "Invalid value 'impression' - at `$.type`"),
    ]


SCHEMA_EVENTS = traffical_schema_events()


def published_schema() -> dict[str, Any]:
    text = resources.files("sluice.schemas").joinpath("traffical/events.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@pytest.mark.parametrize("name", SCHEMA_EVENTS)
async def test_every_shape_the_published_schema_allows_is_accepted(gw: Harness, sk: str, name: str) -> None:
    event = SCHEMA_EVENTS[name]
    jsonschema.validate(event, published_schema())  # the builder really is a schema shape
    response = await gw.post("/v1/events/batch", {"events": [event]}, **auth(sk))
    assert (response.status, await response.json()) == (200, {"accepted": 1, "written": 1})
    assert gw.dead() == []
    assert events_of(gw.raw()[0]) == [event]


async def test_a_body_tenant_other_than_the_keys_is_kept_and_counted(gw: Harness, sk: str) -> None:
    events = [
        traffical_event(0, orgId="org_other"),
        traffical_event(1, projectId="proj_other", env="staging"),
        traffical_event(1, orgId="org_acme", projectId="web", env="production"),  # the key's own
    ]
    response = await gw.post("/v1/events", {"events": events}, **auth(sk))
    assert (response.status, await response.json()) == (200, {"accepted": 3, "written": 3})
    assert gw.dead() == []
    [record] = gw.raw()
    assert (record.org_id, record.project_id, record.env) == ("org_acme", "web", "production")
    assert events_of(record) == events
    metrics = await (await gw.client.get("/metrics")).text()
    for field, count in {"orgId": 1, "projectId": 2, "env": 1}.items():
        assert f'sluice_gateway_tenant_mismatch_total{{family="traffical",field="{field}"}} {count}.0' in metrics


@pytest.mark.parametrize(
    "body",
    [{"events": []}, {"events": [traffical_event(0)] * 1001}, {"events": "x"}, {}, [], b"{nope"],
    ids=["empty", "1001", "not-array", "missing", "array-body", "bad-json"],
)
async def test_bad_envelopes_are_the_pages_400(gw: Harness, sk: str, body: Any) -> None:
    response = await gw.post("/v1/events", body, **auth(sk))
    assert response.status == 400
    assert await response.json() == {
        "error": "Bad Request",
        "message": "events must be a non-empty array (max 1000)",
    }
    assert gw.sink.records == []


async def test_1000_events_are_accepted(gw: Harness, sk: str) -> None:
    response = await gw.post("/v1/events", {"events": [traffical_event(0)] * 1000}, **auth(sk))
    assert (response.status, await response.json()) == (200, {"accepted": 1000, "written": 1000})


@pytest.mark.parametrize(
    ("key_kind", "message"),
    [
        ("none", "Missing API key"),
        ("unknown", "Invalid or expired API key"),
        ("no-scope", "API key lacks the sdk:write scope"),
    ],
)
async def test_unauthorized_in_the_pages_shape(gw: Harness, key_kind: str, message: str) -> None:
    keys = {
        "none": None,
        "unknown": "traffical_sk_nope",
        "no-scope": gw.key("secret", prefix="traffical_sk_"),
    }
    key = keys[key_kind]
    response = await gw.post("/v1/events", TRAFFICAL_EXAMPLE, **(auth(key) if key else {}))
    assert response.status == 401
    assert await response.json() == {"error": "Unauthorized", "message": message}


async def test_503_in_the_pages_shape(gw: Harness, sk: str) -> None:
    gw.sink.fail = True
    response = await gw.post("/v1/events", TRAFFICAL_EXAMPLE, **auth(sk))
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert await response.json() == {
        "error": "Service Unavailable", "message": "Service temporarily unavailable; retry later",
    }  # fmt: skip
