"""Property tests: whatever arrives, the answer is a clear 4xx or a 2xx, never a 5xx or a crash;
the normalizer turns anything into canonical events or dead letters."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.canonical import CanonicalEvent
from pipeline.normalize import Invalid, normalize
from services.gateway.routes import ROUTE_FAMILY
from sluice.envelope import RawBatch
from tests.builders import HALO_EXAMPLE, TRAFFICAL_EXAMPLE, XAIKU_CURL_EVENTS, solute_event
from tests.gateway_harness import Harness, harness

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50)
    | st.sampled_from(["", "\x00", "2025-01-15T10:30:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "💥" * 20])
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
FIELDS = [
    "type", "event", "timestamp", "userId", "unitKey", "layers", "events", "batch", "event_type", "metadata",
    "eventName", "experimentId", "sessionId", "messageId", "properties", "traits", "user_id", "company_id",
]  # fmt: skip
VALID = {
    "halo": HALO_EXAMPLE["events"][0],
    "xaiku": XAIKU_CURL_EVENTS[0],
    "solute": solute_event(),
    "traffical": TRAFFICAL_EXAMPLE["events"][0],
}


@st.composite
def mutated(draw: st.DrawFn, family: str) -> dict[str, Any]:
    """A valid event of the family with some fields replaced by anything."""
    event = dict(VALID[family])
    for name in draw(st.lists(st.sampled_from(FIELDS + list(event)), max_size=4)):
        event[name] = draw(json_values)
    return event


def body_for(path: str, events: list[Any]) -> dict[str, Any]:
    if path == "/api/events":
        return {"batch": events, "sentAt": "2025-01-15T10:30:05Z"}
    if path.startswith("/api/sdk/users") or path.startswith("/api/sdk/companies"):
        return events[0] if events and isinstance(events[0], dict) else {"x": events}
    return {"events": events}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def gw(loop: asyncio.AbstractEventLoop) -> Iterator[tuple[Harness, str]]:
    context = harness(rate_limit=0)
    h = loop.run_until_complete(context.__aenter__())
    key = h.key("publishable", org="org_acme", scopes=("sdk:write",))
    yield h, key
    loop.run_until_complete(context.__aexit__(None, None, None))


def ask(loop: asyncio.AbstractEventLoop, h: Harness, key: str, path: str, body: bytes) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}", "X-Api-Key": key, "X-public-key": key}
        response = await h.client.post(path, data=body, headers=headers)
        return response.status, await response.json()

    return loop.run_until_complete(go())


def check_answer(path: str, status: int, answer: Any) -> None:
    assert status in (200, 400, 401, 403, 413), (status, answer)
    if status != 200:
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str)
        if ROUTE_FAMILY[path] == "traffical":
            assert isinstance(answer.get("message"), str)


PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("path", list(ROUTE_FAMILY))
@PROFILE
@given(data=st.data())
def test_mutated_events_get_a_clear_answer(
    gw: tuple[Harness, str], loop: asyncio.AbstractEventLoop, path: str, data: st.DataObject
) -> None:
    h, key = gw
    family = ROUTE_FAMILY[path]
    events = data.draw(st.lists(mutated(family) | json_values, min_size=0, max_size=5))
    status, answer = ask(loop, h, key, path, msgspec.json.encode(body_for(path, events)))
    check_answer(path, status, answer)


@pytest.mark.parametrize("path", list(ROUTE_FAMILY))
@PROFILE
@given(
    body=st.binary(max_size=300)
    | st.sampled_from(
        [
            b"[" * 5000,
            b'{"events": ' + b"[" * 3000,
            b"\x00" * 64,
            b'{"events": [NaN]}',
            b"\xff\xfe{}",
            b'{"batch": [-1e999]}',
        ]
    )
)
def test_garbage_bodies_get_a_clear_answer(
    gw: tuple[Harness, str], loop: asyncio.AbstractEventLoop, path: str, body: bytes
) -> None:
    h, key = gw
    status, answer = ask(loop, h, key, path, body)
    check_answer(path, status, answer)
    assert status != 200 or body.strip()


@pytest.mark.parametrize("family", list(VALID))
@PROFILE
@given(data=st.data())
def test_the_normalizer_never_raises(family: str, data: st.DataObject) -> None:
    events = data.draw(st.lists(mutated(family) | json_values, min_size=1, max_size=5))
    route = {"halo": "/api/sdk/events", "xaiku": "/api/v1/analytics", "solute": "/api/events",
             "traffical": "/v1/events"}[family]  # fmt: skip
    batch = RawBatch(
        family=family, route=route, org_id="acme", project_id="p", env="e",  # type: ignore[arg-type]
        received_at=data.draw(st.floats(min_value=0, max_value=4e9)), body_digest="d",
        events=[msgspec.Raw(msgspec.json.encode(e)) for e in events], indexes=list(range(len(events))),
        sent_at=data.draw(st.none() | st.text(max_size=30)),
        batch={"user_id": msgspec.Raw(msgspec.json.encode(data.draw(json_values)))},
    )  # fmt: skip
    out = list(normalize(batch))
    assert len(out) == len(events)
    for item in out:
        assert isinstance(item, CanonicalEvent | Invalid)
        if isinstance(item, CanonicalEvent):
            assert math.isfinite(item.timestamp.timestamp())
            msgspec.json.decode(item.properties)
