"""Property tests: whatever arrives, the answer is a clear 4xx or a 2xx, never a 5xx or a crash;
the normalizer turns anything into canonical events or dead letters."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
import math
import zlib
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
from tests.builders import (
    HALO_EXAMPLE,
    TRAFFICAL_EXAMPLE,
    XAIKU_CURL_EVENTS,
    posthog_batch,
    posthog_event,
    segment_batch,
    segment_event,
    solute_event,
)
from tests.gateway_harness import Harness, harness
from tests.test_gateway_common import VALID as COMMON_REQUESTS
from tests.test_gateway_common import Request

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
    "anonymousId", "previousId", "groupId", "context", "distinct_id", "$distinct_id", "uuid", "token", "$set",
]  # fmt: skip
VALID = {
    "halo": HALO_EXAMPLE["events"][0],
    "xaiku": XAIKU_CURL_EVENTS[0],
    "solute": solute_event(),
    "traffical": TRAFFICAL_EXAMPLE["events"][0],
    "segment": segment_event(),
    "posthog": posthog_event(),
}


@st.composite
def mutated(draw: st.DrawFn, family: str) -> dict[str, Any]:
    """A valid event of the family with some fields replaced by anything."""
    event = dict(VALID[family])
    for name in draw(st.lists(st.sampled_from(FIELDS + list(event)), max_size=4)):
        event[name] = draw(json_values)
    return event


def body_for(path: str, events: list[Any], key: str) -> Any:
    family = ROUTE_FAMILY[path]
    if family == "posthog":  # its token in the body
        return {"api_key": key, "batch": events, "sent_at": "2025-01-15T10:30:05Z"}
    if family == "segment":  # the write key in the body, as analytics.js sends it
        if path in ("/v1/batch", "/v1/b", "/v1/import"):
            return {"writeKey": key, "batch": events, "sentAt": "2025-01-15T10:30:05Z"}
        single = events[0] if events and isinstance(events[0], dict) else {"x": events}
        return {**single, "writeKey": key}
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
    status, answer = ask(loop, h, key, path, msgspec.json.encode(body_for(path, events, key)))
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
             "traffical": "/v1/events", "segment": "/v1/batch", "posthog": "/batch/"}[family]  # fmt: skip
    batch = RawBatch(
        family=family, route=route, org_id="acme", project_id="p", env="e",  # type: ignore[arg-type]
        received_at=data.draw(st.floats(min_value=0, max_value=4e9)), body_digest="d",
        events=[msgspec.Raw(msgspec.json.encode(e)) for e in events], indexes=list(range(len(events))),
        sent_at=data.draw(st.none() | st.text(max_size=30)),
        batch={
            name: msgspec.Raw(msgspec.json.encode(data.draw(json_values)))
            for name in data.draw(st.sets(st.sampled_from(["user_id", "context", "integrations", "sent_at"])))
        },
    )  # fmt: skip
    out = list(normalize(batch))
    assert len(out) == len(events)
    for item in out:
        assert isinstance(item, CanonicalEvent | Invalid)
        if isinstance(item, CanonicalEvent):
            assert math.isfinite(item.timestamp.timestamp())
            msgspec.json.decode(item.properties)


SEGMENT_SHORT = {"/v1/t": "track", "/v1/i": "identify", "/v1/p": "page", "/v1/s": "screen", "/v1/g": "group",
                 "/v1/a": "alias", "/v1/b": "batch"}  # fmt: skip


def segment_request(path: str) -> Request:
    """Segment's call for ``path``: the write key by Basic auth (the body's ``writeKey`` also works)."""
    kind = SEGMENT_SHORT.get(path) or path.removeprefix("/v1/")
    basic = lambda key: {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}  # noqa: E731
    if kind in ("batch", "import"):
        return basic, segment_batch()
    extra = {"groupId": "g1", "traits": {"name": "Acme"}} if kind == "group" else {}
    extra |= {"previousId": "anon_456"} if kind == "alias" else {}
    extra |= {"name": "Home"} if kind in ("page", "screen") else {}
    event = segment_event(type=kind, event="Order Completed" if kind == "track" else None, **extra)
    return basic, msgspec.json.encode({**event, "sentAt": "2025-01-15T10:30:05+00:00"})


KEY_IN_BODY = "@@key@@"
"""PostHog's token travels in the body (``api_key``): it stands for the key presented."""
VALID_REQUESTS: dict[str, Request] = {
    **COMMON_REQUESTS,
    **{path: segment_request(path) for path, family in ROUTE_FAMILY.items() if family == "segment"},
    **{
        path: (lambda key: {}, posthog_batch(api_key=KEY_IN_BODY))
        for path, family in ROUTE_FAMILY.items() if family == "posthog"
    },
}  # fmt: skip
assert VALID_REQUESTS.keys() == ROUTE_FAMILY.keys()


# --- no 5xx from any body, with or without a key, and no traceback in the log ---------------

BAD = b"@@bad@@"
"""Stands for a field's value (or name) in the encoded body, then becomes arbitrary bytes."""
ENCODINGS = [None, "identity", "gzip", "deflate", "gzip-garbage", "zstd", "br", "x-unknown"]


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value``; a ``("name", key)`` step stands for the key itself."""
    out = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += [(*path, ("name", key)), *places(inner, (*path, key))]
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += places(inner, (*path, index))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    step, rest = path[0], path[1:]
    if isinstance(step, tuple):  # the key itself
        return {(new if k == step[1] else k): v for k, v in value.items()}
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[step] = replaced(value[step], rest, new)
    return copy


@pytest.fixture(scope="module")
def tracebacks() -> Iterator[list[logging.LogRecord]]:
    """Records logged with a traceback (or at error level) anywhere, while the module runs."""
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record) if record.exc_info or record.levelno >= logging.ERROR else None  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    yield seen
    logging.getLogger().removeHandler(handler)


@pytest.mark.parametrize("path", list(ROUTE_FAMILY))
@PROFILE
@given(data=st.data())
def test_no_body_field_or_encoding_gets_a_5xx_or_a_traceback(
    gw: tuple[Harness, str], loop: asyncio.AbstractEventLoop, tracebacks: list[logging.LogRecord], path: str,
    data: st.DataObject,
) -> None:  # fmt: skip
    h, key = gw
    family_headers, valid = VALID_REQUESTS[path]
    body = valid if isinstance(valid, dict) else msgspec.json.decode(valid)
    presented = data.draw(st.sampled_from([None, key, "pk_unknown"]))
    if path == "/api/v1/analytics" and data.draw(st.booleans()):  # the sendBeacon form: key in the body
        body, presented = {**body, "pkey": presented or key}, None
    if ROUTE_FAMILY[path] == "posthog":  # the token is in the body, or missing
        body = {**body, "api_key": presented} if presented else {k: v for k, v in body.items() if k != "api_key"}
        presented = None
    where = data.draw(st.sampled_from(places(body)))
    body = replaced(
        body,
        where,
        BAD.decode() if where and isinstance(where[-1], tuple) else data.draw(json_values | st.just(BAD.decode())),
    )
    raw = msgspec.json.encode(body).replace(b'"' + BAD + b'"', b'"' + data.draw(st.binary(max_size=6)) + b'"')
    headers = family_headers(presented) if presented else {}
    encoding = data.draw(st.sampled_from(ENCODINGS))
    if encoding == "gzip":
        raw = gzip.compress(raw)
    elif encoding == "deflate":
        raw = zlib.compress(raw)
    if encoding is not None:
        headers["Content-Encoding"] = encoding.removesuffix("-garbage")

    async def go() -> tuple[int, Any]:
        response = await h.client.post(path, data=raw, headers=headers)
        return response.status, await response.json()

    status, answer = loop.run_until_complete(go())
    check_answer(path, status, answer)
    assert not tracebacks, [r.getMessage() for r in tracebacks]


@pytest.mark.parametrize("encoding", ["zstd", "gzip", "deflate", "br"])
def test_garbage_content_encoding_without_a_key_is_a_400(
    gw: tuple[Harness, str], loop: asyncio.AbstractEventLoop, tracebacks: list[logging.LogRecord], encoding: str
) -> None:
    h, _ = gw

    async def go() -> tuple[int, Any]:
        response = await h.client.post("/api/v1/analytics", data=b"\x28\xb5\x2f\xfdgarbage", headers={
            "Content-Encoding": encoding, "Content-Type": "text/plain"})  # fmt: skip
        return response.status, await response.json()

    status, answer = loop.run_until_complete(go())
    assert status == 400 and answer["error"].startswith(("Unsupported Content-Encoding", "Request body is not valid"))
    assert not tracebacks


NOON = b"2025-01-15T12:00:00Z"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/analytics", b'{"pkey": "\xff", "events": []}'),  # keyless sendBeacon form
        ("/api/events", b'{"batch": [{"type": "track", "event": "\xff", "userId": "u", "timestamp": "'
         + NOON + b'"}]}'),
        ("/api/sdk/events", b'{"events": [{"event_type": "click", "metadata": {"a": "\xc3"}}]}'),
        ("/api/sdk/users/identify", b'{"user_id": "u", "traits": {"a": "\xff"}}'),
        ("/v1/events", b'{"events": [{"type": "track", "event": "e", "unitKey": "u", "timestamp": "' + NOON
         + b'", "properties": {"a": "\xed\xa0\x80"}}]}'),
    ],
)  # fmt: skip
def test_invalid_utf8_in_a_field_is_a_400_in_the_familys_shape(
    gw: tuple[Harness, str], loop: asyncio.AbstractEventLoop, tracebacks: list[logging.LogRecord], path: str,
    body: bytes,
) -> None:  # fmt: skip
    h, key = gw
    headers = {} if path == "/api/v1/analytics" else VALID_REQUESTS[path][0](key)

    async def go() -> tuple[int, Any]:
        response = await h.client.post(path, data=body, headers=headers)
        return response.status, await response.json()

    status, answer = loop.run_until_complete(go())
    assert status == 400, answer
    check_answer(path, status, answer)
    assert h.sink.records == [] or all(body not in r[2] for r in h.sink.records)
    assert not tracebacks
