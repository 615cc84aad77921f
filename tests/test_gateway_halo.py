"""``/api/sdk/events`` and the identify routes (Halo): golden records, limits, identity checks."""

from __future__ import annotations

import time
from typing import Any

import jwt
import msgspec
import pytest

from sluice.envelope import RawBatch, body_digest
from sluice.registry import OrgSettings
from tests.builders import HALO_EXAMPLE, encode, halo_company, halo_events, halo_user
from tests.gateway_harness import NOW, Harness, events_of

EVENTS, USERS, COMPANIES = "/api/sdk/events", "/api/sdk/users/identify", "/api/sdk/companies/identify"
SECRET = "ha_secret_test_only_0123456789abcdef"
OTHER_SECRET = "ha_secret_some_other_org_0123456789abcdef"
FAILED = "Identity verification failed: "


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def token(claims: dict[str, Any], secret: str = SECRET, expires_in: float = 3600) -> str:
    return jwt.encode({"exp": int(time.time() + expires_in), **claims}, secret, algorithm="HS256")


async def test_events_example_is_recorded_exactly(gw: Harness) -> None:
    body = encode(HALO_EXAMPLE)
    response = await gw.post(EVENTS, body, **auth(gw.key(prefix="ab_live_")))
    assert (response.status, await response.json()) == (200, {"success": True})
    [record] = gw.raw()
    assert record == RawBatch(
        family="halo", route=EVENTS, org_id="acme", project_id="web", env="production",
        received_at=NOW, body_digest=body_digest(body), events=record.events, indexes=[0, 1],
        batch=record.batch,
    )  # fmt: skip
    assert events_of(record) == HALO_EXAMPLE["events"]
    assert {k: msgspec.json.decode(v) for k, v in record.batch.items()} == {
        "user_id": "user_123", "session_id": "sess_abc123",
    }  # fmt: skip


async def test_unknown_event_fields_travel_untouched(gw: Harness) -> None:
    event = {"event_type": "hover", "framework": "react", "partId": "p1", "hoverDuration": 1200}
    response = await gw.post(EVENTS, halo_events(event), **auth(gw.key()))
    assert response.status == 200
    assert events_of(gw.raw()[0]) == [event]


async def test_identify_user_and_company_are_recorded_without_the_token(gw: Harness) -> None:
    key = gw.key()
    for path, body in ((USERS, halo_user(user_token="not-checked-when-off")), (COMPANIES, halo_company())):
        response = await gw.post(path, body, **auth(key))
        assert (response.status, await response.json()) == (200, {"success": True})
    user, company = gw.raw()
    assert (user.route, company.route) == (USERS, COMPANIES)
    assert events_of(user) == [halo_user()]  # user_token dropped
    assert events_of(company) == [halo_company()]


async def test_a_token_is_dropped_whatever_its_spelling_and_numbers_stay_as_sent(gw: Harness) -> None:
    """The token is taken out of the decoded payload: an escaped name is the same name; a number
    no float holds (it was a 500) is kept as sent."""
    body = (
        encode(halo_user(user_token="tok-secret", traits={"plan": "pro"}))
        .replace(b'"user_token"', b'"user\\u005ftoken"')
        .replace(b'"plan":"pro"', b'"plan":"pro","big":1e400,"exact":0.10')
    )
    response = await gw.post(USERS, body, **auth(gw.key()))
    assert (response.status, await response.json()) == (200, {"success": True})
    [user] = gw.raw()
    forwarded = bytes(user.events[0])
    assert b"tok-secret" not in forwarded and b'"big":1E+400,"exact":0.10' in forwarded


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (EVENTS, halo_events(*[{"event_type": "x"}] * 101), "events must contain between 1 and 100 events"),
        (EVENTS, halo_events(events=[]), "events must contain between 1 and 100 events"),
        (EVENTS, {"user_id": "u"}, "Invalid request body: Object missing required field `events`"),
        (EVENTS, halo_events({"event_type": "a"}, {"page_url": "/x"}),
         "events[1]: Object missing required field `event_type`"),
        (EVENTS, halo_events({"event_type": ""}), "events[0]: event_type is required"),
        (EVENTS, halo_events({"event_type": "a", "metadata": [1]}), "events[0]: metadata must be an object"),
        (EVENTS, halo_events({"event_type": "a", "metadata": {"k": "x" * 10_000}}),
         "events[0]: metadata exceeds 10000 bytes"),
        (USERS, {"traits": {}}, "Invalid request body: Object missing required field `user_id`"),
        (USERS, halo_user(user_id=""), "user_id must not be empty"),
        (USERS, halo_user(traits={"bio": "x" * 19_990}), "traits and context exceed 20000 bytes"),
        (USERS, halo_user(traits="plain"), "traits and context must be objects"),
        (COMPANIES, halo_company(traits={"notes": "x" * 50_000}), "traits and context exceed 50000 bytes"),
        (COMPANIES, {"traits": {}}, "Invalid request body: Object missing required field `company_id`"),
    ],
)  # fmt: skip
async def test_invalid_requests_are_400_and_keep_nothing(gw: Harness, path: str, body: Any, error: str) -> None:
    response = await gw.post(path, body, **auth(gw.key()))
    assert (response.status, await response.json()) == (400, {"error": error})
    assert gw.sink.records == []


async def test_limits_are_inclusive(gw: Harness) -> None:
    key = gw.key()
    metadata = {"k": "x" * (10_000 - len('{"k":""}'))}  # exactly 10,000 bytes
    assert len(encode(metadata)) == 10_000
    events = [{"event_type": "a", "metadata": metadata}] + [{"event_type": "b"}] * 99
    assert (await gw.post(EVENTS, halo_events(*events), **auth(key))).status == 200
    traits = {"k": "x" * (20_000 - len('{"k":""}') - 2)}
    assert (await gw.post(USERS, halo_user(traits=traits, context={}), **auth(key))).status == 200


async def test_only_publishable_bearer_keys_are_accepted(gw: Harness) -> None:
    secret = await gw.post(EVENTS, HALO_EXAMPLE, **auth(gw.key("secret")))
    assert (secret.status, await secret.json()) == (401, {"error": "This endpoint needs a publishable key"})
    basic = await gw.post(EVENTS, HALO_EXAMPLE, Authorization=f"Basic {gw.key()}")
    assert (basic.status, await basic.json()) == (401, {"error": "Missing API key"})
    lower = await gw.post(EVENTS, HALO_EXAMPLE, Authorization=f"bearer {gw.key()}")
    assert lower.status == 200


class TestIdentityVerification:
    @pytest.fixture
    def key(self, gw: Harness) -> str:
        gw.org(OrgSettings(org_id="acme", identity_verification=True, identity_secret=SECRET))
        return gw.key()

    @pytest.mark.parametrize(
        ("user_token", "error"),
        [
            (None, FAILED + "user_token is required"),
            ("garbage", FAILED + "invalid user_token"),
            (token({"user_id": "user_123"}, secret=OTHER_SECRET), FAILED + "invalid user_token"),
            (token({"user_id": "user_123"}, expires_in=-10), FAILED + "user_token has expired"),
            (jwt.encode({"user_id": "user_123"}, SECRET, algorithm="HS256"), FAILED + "invalid user_token"),
            (token({"user_id": "someone_else"}), FAILED + "user_token does not match user_id"),
            (token({"user_id": "user_123"}).replace(".", ".x", 1), FAILED + "invalid user_token"),
        ],
    )  # fmt: skip
    async def test_bad_tokens_are_403_on_events_and_identify(
        self, gw: Harness, key: str, user_token: str | None, error: str
    ) -> None:
        gw.now = time.time()  # PyJWT checks exp against the real clock
        for path, body in (
            (EVENTS, halo_events(user_token=user_token)),
            (USERS, halo_user(user_token=user_token)),
        ):
            response = await gw.post(path, body, **auth(key))
            assert (response.status, await response.json()) == (403, {"error": error})
        assert gw.sink.records == []

    @pytest.mark.parametrize("claims", [{"user_id": "user_123"}, {"sub": "user_123"}])
    async def test_a_matching_unexpired_token_passes_and_is_not_forwarded(
        self, gw: Harness, key: str, claims: dict[str, str]
    ) -> None:
        gw.now = time.time()
        signed = jwt.encode({"exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")
        assert (await gw.post(EVENTS, halo_events(user_token=signed), **auth(key))).status == 200
        assert (await gw.post(USERS, halo_user(user_token=signed), **auth(key))).status == 200
        for record in gw.raw():
            assert signed.encode() not in msgspec.json.encode(record)

    async def test_anonymous_users_need_no_token(self, gw: Harness, key: str) -> None:
        assert (await gw.post(EVENTS, halo_events(user_id=None), **auth(key))).status == 200
        assert (await gw.post(EVENTS, halo_events(user_id="anon_5f2"), **auth(key))).status == 200
