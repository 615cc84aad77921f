"""``POST /api/v1/analytics`` (Xaiku): the header form and the sendBeacon form."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.envelope import RawBatch, body_digest
from tests.builders import XAIKU_CURL_EVENTS, XAIKU_FULL_EVENT, encode, xaiku_event, xaiku_sdk_event
from tests.gateway_harness import NOW, Harness, events_of

PATH = "/api/v1/analytics"


def headers(key: str) -> dict[str, str]:
    return {"Accept": "application/json", "Content-Type": "application/json", "X-public-key": key}


@pytest.mark.parametrize("events", [XAIKU_CURL_EVENTS, [XAIKU_FULL_EVENT]], ids=["curl", "fetch-full"])
async def test_header_form_examples_are_recorded_exactly(gw: Harness, events: list[dict[str, Any]]) -> None:
    body = encode({"events": events})
    response = await gw.post(PATH, body, **headers(gw.key()))
    assert (response.status, await response.json()) == (200, {"success": True})
    [record] = gw.raw()
    assert record == RawBatch(
        family="xaiku", route=PATH, org_id="acme", project_id="web", env="production",
        received_at=NOW, body_digest=body_digest(body), events=record.events,
        indexes=list(range(len(events))),
    )  # fmt: skip
    assert events_of(record) == events


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/json", None])
async def test_send_beacon_form_with_pkey_in_the_body(gw: Harness, content_type: str | None) -> None:
    key = gw.key(prefix="pk_")
    body = encode({"events": XAIKU_CURL_EVENTS, "pkey": key})
    extra = {"Content-Type": content_type} if content_type else {}
    response = await gw.client.post(PATH, data=body, headers=extra, skip_auto_headers=["Content-Type"])
    assert (response.status, await response.json()) == (200, {"success": True})
    [record] = gw.raw()
    assert events_of(record) == XAIKU_CURL_EVENTS
    assert key.encode() not in encode(record)  # the key never reaches Kafka


async def test_unknown_fields_are_kept(gw: Harness) -> None:
    event = xaiku_event(framework="next", partId="hero", hoverDuration=830)
    assert (await gw.post(PATH, {"events": [event]}, **headers(gw.key()))).status == 200
    assert events_of(gw.raw()[0]) == [event]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"events": []}, "events must be a non-empty array"),
        ({"events": [xaiku_event(experimentId=None)]},
         "events[0]: Object missing required field `experimentId`"),
        ({"events": [xaiku_event(), xaiku_event(sessionId="")]}, "events[1]: sessionId must not be empty"),
        ({"events": [xaiku_event(loadTime="slow")]}, "events[0]: Expected `float | null`, got `str` - at `$.loadTime`"),
        ({"evts": []}, "Invalid request body: Object missing required field `events`"),
    ],
)  # fmt: skip
async def test_invalid_requests_are_400_and_keep_nothing(gw: Harness, body: Any, error: str) -> None:
    response = await gw.post(PATH, body, **headers(gw.key()))
    assert (response.status, await response.json()) == (400, {"error": error})
    assert gw.sink.records == []


async def test_key_errors(gw: Harness) -> None:
    body = {"events": XAIKU_CURL_EVENTS}
    missing = await gw.post(PATH, body)
    assert (missing.status, await missing.json()) == (401, {"error": "Missing API key"})
    wrong = await gw.post(PATH, {**body, "pkey": "pk_unknown"})
    assert (wrong.status, await wrong.json()) == (401, {"error": "Invalid or expired API key"})
    secret = await gw.post(PATH, body, **headers(gw.key("secret")))
    assert (secret.status, await secret.json()) == (401, {"error": "This endpoint needs a publishable key"})


async def test_body_over_one_megabyte_is_413(gw: Harness) -> None:
    events = [xaiku_event(referrer="x" * 1000)] * 1100
    response = await gw.post(PATH, {"events": events}, **headers(gw.key()))
    assert (response.status, await response.json()) == (
        413,
        {"error": "Request body too large (max 1048576 bytes)"},
    )


async def test_the_browser_sdks_fetch_and_beacon_requests(gw: Harness) -> None:
    """Exactly what @xaiku/browser sends: its request helper's fetch (Accept, Content-Type and
    X-public-key) and, on unload, ``sendBeacon(url, JSON.stringify({events, pkey}))`` — a string
    beacon, so text/plain;charset=UTF-8 and no custom header."""
    key = gw.key(prefix="pk_")
    fetched = [xaiku_sdk_event(), xaiku_sdk_event(eventName="click", clickTarget="#cta", userId="", orgId="org_x")]
    response = await gw.post(PATH, {"events": fetched}, **headers(key))
    assert (response.status, await response.json()) == (200, {"success": True})
    beacon = encode({"events": [xaiku_sdk_event(eventName="dwell_time", timeOnPage=32000, test=True)], "pkey": key})
    response = await gw.client.post(PATH, data=beacon, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert (response.status, await response.json()) == (200, {"success": True})
    assert [events_of(r) for r in gw.raw()] == [fetched, [xaiku_sdk_event(eventName="dwell_time", timeOnPage=32000,
                                                                          test=True)]]  # fmt: skip
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'sluice_gateway_tenant_mismatch_total{family="xaiku",field="orgId"} 1.0' in metrics


async def test_odd_user_ids_do_not_cost_the_batch(gw: Harness) -> None:
    events = [xaiku_sdk_event(userId=42), xaiku_sdk_event(userId=None, orgId={"id": 1})]
    assert (await gw.post(PATH, {"events": events}, **headers(gw.key()))).status == 200


async def test_more_than_a_thousand_events_is_400_and_keeps_nothing(gw: Harness) -> None:
    """The review sent 18,590 events in one 1 MiB body; the rate limit counts requests."""
    key = gw.key()
    event = {"eventName": "click", "experimentId": "e", "sessionId": "s"}
    at_cap = await gw.post(PATH, {"events": [event] * 1000}, **headers(key))
    over = await gw.post(PATH, {"events": [event] * 1001}, **headers(key))
    beacon = await gw.post(PATH, {"events": [event] * 1001, "pkey": key})  # 52 kB: the beacon form too
    assert at_cap.status == 200
    for response in (over, beacon):
        assert (response.status, await response.json()) == (400, {"error": "events must hold at most 1000 events"})
    assert len(gw.raw()) == 1
