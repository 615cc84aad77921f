"""``POST /api/events`` against an in-memory sink: golden records, every error path."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import build_app
from services.gateway.context import Gateway
from services.gateway.sink import MemorySink
from sluice.envelope import DeadLetter, RawBatch, body_digest
from sluice.registry import Registry, key_record, new_key
from sluice.settings import Settings
from tests.builders import solute_body, solute_event

NOW = 1_736_937_005.0  # 2025-01-15T10:30:05Z


class Env:
    def __init__(self, client: TestClient[Any, Any], sink: MemorySink, key: str, registry: Registry):
        self.client = client
        self.sink = sink
        self.key = key
        self.registry = registry

    async def post(self, body: bytes, key: str | None = "default", **headers: str) -> Any:
        if key is not None:
            headers["X-Api-Key"] = self.key if key == "default" else key
        return await self.client.post("/api/events", data=body, headers=headers)

    def records(self, topic_suffix: str) -> list[bytes]:
        return [value for topic, _, value in self.sink.records if topic.endswith(topic_suffix)]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    registry = Registry()
    key, record = new_key("acme", "publishable", project_id="web", env="production", now=NOW - 60)
    registry.apply(*key_record(record))
    sink = MemorySink()
    gateway = Gateway(Settings.from_env({}), sink, registry, clock=lambda: NOW)
    async with TestClient(TestServer(build_app(gateway))) as client:
        yield Env(client, sink, key, registry)


async def test_reference_example_is_accepted_and_recorded_exactly(env: Env) -> None:
    body = solute_body()
    response = await env.post(body)
    assert response.status == 200
    assert await response.json() == {"success": True, "processed": 1, "failed": 0}
    [raw] = env.records("raw")
    record = msgspec.json.decode(raw, type=RawBatch)
    assert record == RawBatch(
        family="solute", route="/api/events", org_id="acme", project_id="web", env="production",
        received_at=NOW, body_digest=body_digest(body), events=record.events, indexes=[0],
        sent_at="2025-01-15T10:30:05Z",
    )  # fmt: skip
    assert msgspec.json.decode(record.events[0]) == solute_event()
    assert env.records("dlq") == []
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_partial_success_reports_by_index_and_dead_letters_the_rest(env: Env) -> None:
    body = solute_body(
        solute_event(messageId="a"),
        solute_event(type="track", event=None),
        solute_event(messageId="c"),
        solute_event(timestamp="not a time"),
    )
    response = await env.post(body)
    assert response.status == 200
    payload = await response.json()
    assert payload["success"] is True
    assert (payload["processed"], payload["failed"]) == (2, 2)
    assert [e["index"] for e in payload["errors"]] == [1, 3]
    assert payload["errors"][0]["error"] == "track events require 'event'"
    [raw] = env.records("raw")
    assert msgspec.json.decode(raw, type=RawBatch).indexes == [0, 2]
    letters = [msgspec.json.decode(v, type=DeadLetter) for v in env.records("dlq")]
    assert sorted(letter.index or 0 for letter in letters) == [1, 3]
    assert all(letter.org_id == "acme" and letter.reason for letter in letters)


async def test_a_batch_with_no_valid_event_is_400_with_the_report(env: Env) -> None:
    response = await env.post(solute_body(solute_event(userId=None, anonymousId=None)))
    assert response.status == 400
    assert await response.json() == {
        "success": False, "processed": 0, "failed": 1,
        "errors": [{"index": 0, "error": "userId or anonymousId is required"}],
    }  # fmt: skip
    assert env.records("raw") == [] and len(env.records("dlq")) == 1


@pytest.mark.parametrize(
    ("key", "status", "error"),
    [
        (None, 401, "Missing API key"),
        ("pk_not_a_real_key", 401, "Invalid or expired API key"),
    ],
)
async def test_authentication_errors(env: Env, key: str | None, status: int, error: str) -> None:
    response = await env.post(solute_body(), key=key)
    assert response.status == status
    assert await response.json() == {"error": error}
    assert env.sink.records == []


async def test_revoked_and_expired_keys_are_refused(env: Env) -> None:
    revoked_key, revoked = new_key("acme", "secret", now=NOW - 60)
    revoked.revoked = True
    expired_key, expired = new_key("acme", "secret", expires_in=30, now=NOW - 60)
    for record in (revoked, expired):
        env.registry.apply(*key_record(record))
    for key in (revoked_key, expired_key):
        response = await env.post(solute_body(), key=key)
        assert response.status == 401


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "Request body must be a JSON object with a 'batch' array"),
        (b'{"sentAt": "x"}', "Invalid request body: Object missing required field `batch`"),
        (b'{"batch": "nope"}', "Invalid request body: Expected `array`, got `str` - at `$.batch`"),
        (b'{"batch": []}', "batch must contain between 1 and 100 events"),
        (solute_body(*[solute_event()] * 101), "batch must contain between 1 and 100 events"),
    ],
)
async def test_bad_envelopes_are_400(env: Env, body: bytes, error: str) -> None:
    response = await env.post(body)
    assert response.status == 400
    assert await response.json() == {"error": error}
    assert env.sink.records == []


async def test_oversized_body_is_413_from_content_length(env: Env) -> None:
    response = await env.client.post(
        "/api/events", data=io.BytesIO(b"x" * (1_048_576 + 1)), headers={"X-Api-Key": env.key}
    )
    assert response.status == 413
    assert await response.json() == {"error": "Request body too large (max 1048576 bytes)"}


async def test_oversized_chunked_body_is_413_without_reading_it_all(env: Env) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):  # 4 MiB offered with no Content-Length, in 64 KiB chunks
            yield b"x" * 65536

    response = await env.client.post("/api/events", data=chunks(), headers={"X-Api-Key": env.key})
    assert response.status == 413
    assert await response.json() == {"error": "Request body too large (max 1048576 bytes)"}


async def test_kafka_unavailable_is_503_with_retry_after(env: Env) -> None:
    env.sink.fail = True
    response = await env.post(solute_body())
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"].startswith("Service temporarily unavailable")


async def test_preflight_is_answered_with_cors_headers(env: Env) -> None:
    response = await env.client.options("/api/events", headers={"Origin": "https://example.com"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Api-Key" in response.headers["Access-Control-Allow-Headers"]


async def test_unknown_route_is_404_json(env: Env) -> None:
    response = await env.client.post("/api/nope", data=b"{}")
    assert response.status == 404
    assert await response.json() == {"error": "Not Found"}
