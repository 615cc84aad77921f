"""``POST /api/events`` (Solute): golden record, partial success, every error path."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from sluice.envelope import RawBatch, body_digest
from sluice.registry import hash_key
from tests.builders import solute_body, solute_event
from tests.gateway_harness import NOW, Harness, events_of

PATH = "/api/events"


async def test_reference_example_is_accepted_and_recorded_exactly(gw: Harness) -> None:
    body = solute_body()
    response = await gw.post(PATH, body, **{"X-Api-Key": gw.key(), "Content-Type": "application/json"})
    assert response.status == 200
    assert await response.json() == {"success": True, "processed": 1, "failed": 0}
    [record] = gw.raw()
    assert record == RawBatch(
        family="solute", route=PATH, org_id="acme", project_id="web", env="production",
        received_at=NOW, body_digest=body_digest(body), events=record.events, indexes=[0],
        sent_at="2025-01-15T10:30:05Z",
    )  # fmt: skip
    assert events_of(record) == [solute_event()]
    assert gw.dead() == []
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_secret_keys_work_too(gw: Harness) -> None:
    response = await gw.post(PATH, solute_body(), **{"X-Api-Key": gw.key("secret")})
    assert response.status == 200


async def test_partial_success_reports_by_index_and_dead_letters_the_rest(gw: Harness) -> None:
    body = solute_body(
        solute_event(messageId="a"),
        solute_event(type="track", event=None),
        solute_event(messageId="c"),
        solute_event(timestamp="not a time"),
    )
    response = await gw.post(PATH, body, **{"X-Api-Key": gw.key()})
    assert response.status == 200
    assert await response.json() == {
        "success": True, "processed": 2, "failed": 2,
        "errors": [
            {"index": 1, "error": "track events require 'event'"},
            {"index": 3, "error": "Invalid RFC3339 encoded datetime - at `$.timestamp`"},
        ],
    }  # fmt: skip
    [record] = gw.raw()
    assert record.indexes == [0, 2]
    assert [e["messageId"] for e in events_of(record)] == ["a", "c"]
    letters = gw.dead()
    assert [(d.index, d.family, d.org_id, d.route) for d in letters] == [
        (1, "solute", "acme", PATH), (3, "solute", "acme", PATH),
    ]  # fmt: skip
    assert letters[1].reason == "Invalid RFC3339 encoded datetime - at `$.timestamp`"


async def test_a_batch_with_no_valid_event_is_400_with_the_report(gw: Harness) -> None:
    response = await gw.post(PATH, solute_body(solute_event(userId=None, anonymousId=None)), **{"X-Api-Key": gw.key()})
    assert response.status == 400
    assert await response.json() == {
        "success": False, "error": "No valid events in the batch", "processed": 0, "failed": 1,
        "errors": [{"index": 0, "error": "userId or anonymousId is required"}],
    }  # fmt: skip
    assert gw.raw() == [] and len(gw.dead()) == 1


async def test_missing_and_bad_keys_are_401(gw: Harness) -> None:
    missing = await gw.post(PATH, solute_body())
    assert (missing.status, await missing.json()) == (401, {"error": "Missing API key"})
    bad = await gw.post(PATH, solute_body(), **{"X-Api-Key": "pk_not_a_real_key"})
    assert (bad.status, await bad.json()) == (401, {"error": "Invalid or expired API key"})
    assert gw.sink.records == []


async def test_revoked_and_expired_keys_are_401(gw: Harness) -> None:
    expired = gw.key("secret", expires_in=30)  # made a minute ago, so expired 30 s ago
    revoked = gw.key("secret")
    gw.registry.keys[hash_key(revoked)].revoked = True
    for key in (revoked, expired):
        response = await gw.post(PATH, solute_body(), **{"X-Api-Key": key})
        assert (response.status, await response.json()) == (401, {"error": "Invalid or expired API key"})


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
async def test_bad_envelopes_are_400(gw: Harness, body: bytes, error: str) -> None:
    response = await gw.post(PATH, body, **{"X-Api-Key": gw.key()})
    assert (response.status, await response.json()) == (400, {"error": error})
    assert gw.sink.records == []


async def test_oversized_body_is_413_from_content_length(gw: Harness) -> None:
    response = await gw.client.post(PATH, data=io.BytesIO(b"x" * (1_048_576 + 1)), headers={"X-Api-Key": gw.key()})
    assert response.status == 413
    assert await response.json() == {"error": "Request body too large (max 1048576 bytes)"}


async def test_oversized_chunked_body_is_413_without_reading_it_all(gw: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):  # 4 MiB offered with no Content-Length, in 64 KiB chunks
            yield b"x" * 65536

    response = await gw.client.post(PATH, data=chunks(), headers={"X-Api-Key": gw.key()})
    assert response.status == 413
    assert await response.json() == {"error": "Request body too large (max 1048576 bytes)"}


async def test_kafka_unavailable_is_503_with_retry_after(gw: Harness) -> None:
    gw.sink.fail = True
    response = await gw.post(PATH, solute_body(), **{"X-Api-Key": gw.key()})
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert await response.json() == {"error": "Service temporarily unavailable; retry later"}
