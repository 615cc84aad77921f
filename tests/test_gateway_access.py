"""docs/security.md's tables, executed: what each key kind and scope may do on each route, and what
identity verification refuses on every family. The tables are read from the document, so the
document cannot drift from the code."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest

from services.gateway.routes import CONFIG_ROUTES
from sluice.registry import KeyKind, OrgSettings
from tests.builders import (
    TRAFFICAL_EXAMPLE,
    XAIKU_CURL_EVENTS,
    XAIKU_EXPERIMENTS,
    halo_company,
    halo_events,
    halo_user,
    solute_body,
    solute_event,
    traffical_bundle,
    traffical_event,
)
from tests.gateway_harness import Harness
from tests.sdk_requests import SDK_REQUESTS
from tests.test_gateway_common import VALID

DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"
SECRET = "ha_secret_access_table_0123456789abcdef"
ORG = "org_acme"  # the Traffical example's org


def table(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after the ``## heading`` of the document."""
    section = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def route_of(cell: str) -> str:
    match = re.fullmatch(r"`(?:POST|GET) (\S+)`", cell)
    assert match, cell
    return match[1]


def headers(path: str, key: str) -> dict[str, str]:
    if path == "/api/events":
        return {"X-Api-Key": key}
    if path == "/api/v1/analytics":
        return {"X-public-key": key}
    return {"Authorization": f"Bearer {key}"}


KINDS: dict[str, tuple[KeyKind, tuple[str, ...]]] = {
    "publishable": ("publishable", ()),
    "publishable, `sdk:write`": ("publishable", ("sdk:write",)),
    "secret": ("secret", ()),
    "secret, `sdk:write`": ("secret", ("sdk:write",)),
}
KEY_TABLE = table("What each key may do, per route")


@pytest.mark.parametrize("row", KEY_TABLE, ids=[r[0] for r in KEY_TABLE])
async def test_each_key_kind_and_scope_per_route(gw: Harness, row: list[str]) -> None:
    path = route_of(row[0])
    assert len(row) == 1 + len(KINDS)
    _, body = VALID[path]
    for column, expected in zip(KINDS, row[1:], strict=True):
        kind, scopes = KINDS[column]
        response = await gw.post(path, body, **headers(path, gw.key(kind, org=ORG, scopes=scopes)))
        assert response.status == int(expected), (path, column, await response.text())


READ_TABLE = table("What each key may read, per route")
READS = {"/v1/config/{projectId}": "traffical-config", "/api/v1/experiments": "xaiku-experiments"}
EVERY_EXPERIMENT = {"X-experiment-ids": ""}  # (Traffical ignores it)


@pytest.mark.parametrize("row", READ_TABLE, ids=[r[0] for r in READ_TABLE])
async def test_each_key_kind_and_scope_per_configuration_route(gw: Harness, row: list[str]) -> None:
    request = SDK_REQUESTS[READS[route_of(row[0])]]
    gw.config(ORG, "proj_test", "production", traffical_bundle())
    gw.experiments(ORG, XAIKU_EXPERIMENTS)
    for column, expected in zip(KINDS, row[1:], strict=True):
        kind, scopes = KINDS[column]
        key = gw.key(kind, org=ORG, scopes=scopes)
        response = await gw.client.get(request.path, headers={**request.with_key(key), **EVERY_EXPERIMENT})
        assert response.status == int(expected), (row[0], column, await response.text())
    other = gw.key(org="other")
    stranger = await gw.client.get(request.path, headers={**request.with_key(other), **EVERY_EXPERIMENT})
    assert stranger.status == 404


def token(user_id: str) -> str:
    return jwt.encode({"user_id": user_id, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


def solute(token: str | None, **fields: Any) -> bytes:
    event = solute_event(**fields, userToken=token)
    return solute_body(event)


# Each "request" of the identity table: (body for a token or None).
REQUESTS: dict[str, Callable[[str | None], Any]] = {
    "events with `user_id` alice": lambda t: halo_events(user_id="alice", user_token=t),
    "traits of alice": lambda t: halo_user(user_id="alice", user_token=t),
    "company with `user_id` alice": lambda t: halo_company(user_id="alice", user_token=t),
    "company without a user": lambda t: halo_company(),
    "identify alice": lambda t: solute(t, type="identify", userId="alice", traits={"email": "x@evil"}),
    "group alice": lambda t: solute(t, type="group", userId="alice", groupId="co_1"),
    "alias anon_1 to alice": lambda t: solute(t, type="alias", userId="alice", previousId="anon_1"),
    "alias bob to alice": lambda t: solute(t, type="alias", userId="alice", previousId="bob"),
    "track of alice": lambda t: solute(t, userId="alice"),
    "events (no user)": lambda t: {"events": XAIKU_CURL_EVENTS},
}
TRAFFICAL_TRACK = {"events": [traffical_event(1, userId="alice")]}
IDENTITY_TABLE = table("Identity verification, across families")


@pytest.mark.parametrize("row", IDENTITY_TABLE, ids=[f"{r[0]} {r[1]}" for r in IDENTITY_TABLE])
async def test_identity_verification_holds_on_every_family(gw: Harness, row: list[str]) -> None:
    gw.now = time.time()  # PyJWT checks exp against the real clock
    gw.org(OrgSettings(org_id=ORG, identity_verification=True, identity_secret=SECRET))
    path, request, *expected = row
    path = route_of(path)
    build = (lambda t: TRAFFICAL_TRACK) if path == "/v1/events" else REQUESTS[request]
    publishable, secret = gw.key(org=ORG, scopes=("sdk:write",)), gw.key("secret", org=ORG, scopes=("sdk:write",))
    for (body, key), status in zip(
        [(build(None), publishable), (build(token("alice")), publishable), (build(None), secret)], expected, strict=True
    ):
        before = len(gw.sink.records)
        response = await gw.post(path, body, **headers(path, key))
        assert response.status == int(status), (row, await response.text())
        if response.status == 403:
            answer = await response.json()
            assert answer["error"].startswith("Identity verification failed: ")
            assert len(gw.sink.records) == before  # nothing of it kept, not even a dead letter
    for record in gw.sink.records:  # no token ever travels on
        assert b"userToken" not in record[2] and b"user_token" not in record[2]


async def test_a_solute_batch_keeps_what_needs_no_proof_and_reports_the_refusal(gw: Harness) -> None:
    gw.org(OrgSettings(org_id=ORG, identity_verification=True, identity_secret=SECRET))
    body = solute_body(
        solute_event(messageId="t1", userId="alice"),
        solute_event(messageId="i1", type="identify", userId="alice", traits={"email": "x@evil"}),
    )
    response = await gw.post("/api/events", body, **{"X-Api-Key": gw.key(org=ORG)})
    assert (response.status, await response.json()) == (200, {
        "success": True, "processed": 1, "failed": 1,
        "errors": [{"index": 1, "error": "Identity verification failed: user_token is required"}],
    })  # fmt: skip
    [record] = gw.raw()
    assert [msgspec.json.decode(e)["messageId"] for e in record.events] == ["t1"]
    assert gw.dead() == []
    text = await (await gw.client.get("/metrics")).text()
    assert 'sluice_gateway_events_total{family="solute",outcome="rejected",reason="unverified"} 1.0' in text


async def test_tokens_that_live_too_long_are_refused(gw: Harness) -> None:
    gw.org(OrgSettings(org_id=ORG, identity_verification=True, identity_secret=SECRET))
    ten_years = jwt.encode({"user_id": "alice", "exp": int(time.time()) + 10 * 365 * 86400}, SECRET, algorithm="HS256")
    for path, body in (
        ("/api/sdk/users/identify", halo_user(user_id="alice", user_token=ten_years)),
        ("/api/events", solute(ten_years, type="identify", userId="alice")),
    ):
        response = await gw.post(path, body, **headers(path, gw.key(org=ORG)))
        assert response.status == 403
        assert "must expire within 604800s" in (await response.text())


async def test_verification_on_without_a_secret_is_a_clean_403(gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    gw.org(OrgSettings(org_id=ORG, identity_verification=True, identity_secret=""))
    signed = token("alice")
    response = await gw.post("/api/sdk/users/identify", halo_user(user_id="alice", user_token=signed), **headers(
        "/api/sdk/users/identify", gw.key(org=ORG)
    ))  # fmt: skip
    assert (response.status, await response.json()) == (
        403, {"error": "Identity verification failed: identity verification is not configured for this org"},
    )  # fmt: skip
    assert signed not in caplog.text and "Traceback" not in caplog.text


def test_the_tables_cover_every_route() -> None:
    assert {route_of(r[0]) for r in KEY_TABLE} == set(VALID)
    assert {route_of(r[0]) for r in READ_TABLE} == set(READS) == set(CONFIG_ROUTES)
    assert {r[1] for r in IDENTITY_TABLE if route_of(r[0]) != "/v1/events"} == set(REQUESTS)
    assert TRAFFICAL_EXAMPLE  # the /v1/events row is built from the example's track


async def test_a_token_never_reaches_the_dead_letters(gw: Harness) -> None:
    signed = token("alice")
    body = solute_body(solute_event(type="identify", userId="alice", userToken=signed, timestamp="not a time"))
    response = await gw.post("/api/events", body, **{"X-Api-Key": gw.key(org=ORG)})
    assert response.status == 400
    [letter] = gw.dead()
    assert signed.encode() not in bytes(letter.payload) and msgspec.json.decode(letter.payload)["userId"] == "alice"


@pytest.mark.parametrize(
    "event",
    [
        {"type": "identify", "userId": "alice", "timestamp": "yesterday"},  # the review's case: it did not decode
        {"type": "identify", "userId": "alice", "traits": "x@evil"},
        {"type": "group", "userId": "alice"},  # decoded, invalid for another reason (no groupId)
        {"type": "alias", "userId": "alice", "previousId": "anon_1", "timestamp": 7},
        {"type": "Identify", "userId": "alice"},  # no type Sluice knows: it might still change alice
        {"type": "identify", "userId": "alice", "userToken": 42},
    ],
    ids=["bad-timestamp", "bad-traits", "group-without-groupId", "alias-bad-timestamp", "unknown-type", "odd-token"],
)
async def test_identity_is_checked_first_and_an_unproven_change_is_never_a_dead_letter(
    gw: Harness, event: dict[str, Any]
) -> None:
    """Issue 24: an identify for alice with ``timestamp: "yesterday"`` and no token became a dead
    letter (400), which ``sluice dlq replay`` would have applied later without any check."""
    gw.org(OrgSettings(org_id=ORG, identity_verification=True, identity_secret=SECRET))
    body = solute_body({**solute_event(), "event": None, **event})
    response = await gw.post("/api/events", body, **{"X-Api-Key": gw.key(org=ORG)})
    answer = await response.json()
    assert (response.status, answer["success"], answer["processed"]) == (403, False, 0), answer
    assert answer["errors"][0]["error"].startswith("Identity verification failed: ")
    assert gw.sink.records == []  # not even a dead letter


async def test_events_that_change_no_one_or_prove_their_user_are_still_dead_lettered(gw: Harness) -> None:
    gw.org(OrgSettings(org_id=ORG, identity_verification=True, identity_secret=SECRET))
    signed = token("alice")
    body = solute_body(
        solute_event(messageId="t1", userId="alice", timestamp="yesterday"),  # a track: changes no user
        solute_event(messageId="i1", type="identify", userId="alice", userToken=signed, timestamp="yesterday"),
        solute_event(messageId="i2", type="identify", userId="alice", timestamp="yesterday"),
    )
    response = await gw.post("/api/events", body, **{"X-Api-Key": gw.key(org=ORG)})
    answer = await response.json()
    assert response.status == 400
    assert [e["error"].startswith("Identity verification failed: ") for e in answer["errors"]] == [False, False, True]
    assert [(d.index, msgspec.json.decode(d.payload)["messageId"]) for d in gw.dead()] == [(0, "t1"), (1, "i1")]
    assert all(signed.encode() not in record[2] for record in gw.sink.records)


ESCAPED = b'"user\\u0054oken"'  # "userToken", as JSON also allows it to be written


@pytest.mark.parametrize("verification", [False, True])
async def test_a_token_spelled_with_escapes_is_stripped_everywhere(gw: Harness, verification: bool) -> None:
    gw.org(OrgSettings(org_id=ORG, identity_verification=verification, identity_secret=SECRET))
    signed = token("alice")
    body = solute_body(
        solute_event(messageId="kept", type="identify", userId="alice", userToken=signed),
        solute_event(messageId="dead", type="identify", userId="alice", userToken=signed, timestamp="yesterday"),
    ).replace(b'"userToken"', ESCAPED)
    assert body.count(ESCAPED) == 2 and b'"userToken"' not in body
    response = await gw.post("/api/events", body, **{"X-Api-Key": gw.key(org=ORG)})
    assert (response.status, (await response.json())["processed"]) == (200, 1)
    [record], [letter] = gw.raw(), gw.dead()
    assert [msgspec.json.decode(e)["messageId"] for e in record.events] == ["kept"]
    assert msgspec.json.decode(letter.payload)["messageId"] == "dead"
    for kafka_record in gw.sink.records:
        assert signed.encode() not in kafka_record[2] and b"oken" not in kafka_record[2]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/sdk/users/identify", halo_user(user_id="alice", traits="x@evil")),
        ("/api/sdk/companies/identify", halo_company(user_id="alice", company_id="")),
        ("/api/sdk/events", halo_events(user_id="alice", events=[])),
    ],
    ids=["traits-not-an-object", "empty-company-id", "no-events"],
)
async def test_halo_checks_identity_before_the_rest_of_the_request(gw: Harness, path: str, body: Any) -> None:
    gw.org(OrgSettings(org_id=ORG, identity_verification=True, identity_secret=SECRET))
    response = await gw.post(path, body, **headers(path, gw.key(org=ORG)))
    assert response.status == 403, await response.text()
    assert gw.sink.records == []


async def test_a_token_in_an_event_with_numbers_no_float_holds_is_stripped(gw: Harness) -> None:
    signed = token("alice")
    event = solute_event(type="identify", userId="alice", userToken=signed, timestamp="yesterday")
    body = solute_body(event).replace(b'"userToken"', b'"big":1e400,"exact":0.10,' + ESCAPED)
    response = await gw.post("/api/events", body, **{"X-Api-Key": gw.key(org=ORG)})
    assert response.status == 400
    [letter] = gw.dead()
    assert signed.encode() not in bytes(letter.payload) and b'"big":1E+400,"exact":0.10' in bytes(letter.payload)
