"""Golden tests: each SDK's own request (headers, body, content type — tests/sdk_requests.py) in,
the exact Kafka record and answer out; and for Traffical, what the worker makes of it."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest

from pipeline.canonical import CanonicalEvent
from pipeline.normalize import normalize
from sluice.envelope import Family, RawBatch, body_digest
from tests.builders import HALO_EXAMPLE, halo_user, solute_body, traffical_sdk_batch, xaiku_sdk_event
from tests.gateway_harness import NOW, Harness, events_of
from tests.sdk_requests import SDK_REQUESTS

GOLDEN: dict[str, tuple[bytes, dict[str, Any]]] = {
    "traffical-events": (msgspec.json.encode(traffical_sdk_batch()), {"accepted": 3, "written": 3}),
    "xaiku-analytics": (msgspec.json.encode({"events": [xaiku_sdk_event()]}), {"success": True}),
    "solute-events": (solute_body(), {"success": True, "processed": 1, "failed": 0}),
    "halo-events": (msgspec.json.encode(HALO_EXAMPLE), {"success": True}),
    "halo-identify": (msgspec.json.encode(halo_user()), {"success": True}),
}
assert set(GOLDEN) == {name for name, sdk in SDK_REQUESTS.items() if sdk.method == "POST"}


@pytest.mark.parametrize("name", GOLDEN)
async def test_each_sdk_request_gives_its_exact_record_and_answer(gw: Harness, name: str) -> None:
    sdk = SDK_REQUESTS[name]
    body, answer = GOLDEN[name]
    key = gw.key("publishable", org="org_acme", prefix="pk_", scopes=("sdk:write",))
    response = await gw.client.post(sdk.path, data=body, headers=sdk.with_key(key))
    assert (response.status, await response.json()) == (200, answer)
    [record] = gw.raw()
    assert record == RawBatch(
        family=cast(Family, name.split("-")[0]), route=sdk.path, org_id="org_acme", project_id="web", env="production",
        received_at=NOW, body_digest=body_digest(body), events=record.events, indexes=record.indexes,
        sent_at=record.sent_at, batch=record.batch,
    )  # fmt: skip
    assert gw.dead() == []
    assert key.encode() not in body and key.encode() not in msgspec.json.encode(record)


async def test_traffical_keepalive_flush_and_next_session_retry(gw: Harness) -> None:
    """On page hide js-client posts the queue with ``fetch(…, {keepalive: true})`` — the same
    request; what failed is retried next session with the same event ids (deduplicated later)."""
    sdk = SDK_REQUESTS["traffical-events"]
    key = gw.key("publishable", org="org_test", prefix="pk_", scopes=("sdk:write",))
    body = msgspec.json.encode(traffical_sdk_batch())
    for _ in range(2):
        response = await gw.client.post(sdk.path, data=body, headers=sdk.with_key(key))
        assert (response.status, await response.json()) == (200, {"accepted": 3, "written": 3})
    first, retry = gw.raw()
    assert events_of(first) == events_of(retry) == traffical_sdk_batch()["events"]


async def test_traffical_sdk_page_lands_with_its_assignment(gw: Harness) -> None:
    sdk = SDK_REQUESTS["traffical-events"]
    key = gw.key("publishable", org="org_test", prefix="pk_", scopes=("sdk:write",))
    await gw.client.post(sdk.path, data=msgspec.json.encode(traffical_sdk_batch()), headers=sdk.with_key(key))
    rows = list(normalize(gw.raw()[0]))
    assert all(isinstance(r, CanonicalEvent) for r in rows)
    decision, exposure, track = (r for r in rows if isinstance(r, CanonicalEvent))
    assert [(r.type, r.message_id, r.unit_key) for r in (decision, exposure, track)] == [
        ("decision", "dec_1", "user-abc"), ("exposure", "exp_1", "user-abc"), ("track", "trk_1", "user-abc"),
    ]  # fmt: skip
    for row in (decision, exposure):
        assert (row.experiment_id, row.variant_id) == ("policy_color_test", "treatment")
    assert exposure.decision_id == "dec_1"


def test_an_exposure_never_names_an_attribution_only_layer() -> None:
    layers = [
        {"layerId": "layer_ui", "bucket": 1, "policyId": "policy_other", "allocationName": "b",
         "attributionOnly": True},
        {"layerId": "layer_pricing", "bucket": 42, "policyId": "policy_discount", "allocationName": "discount_10"},
    ]  # fmt: skip
    events = [dict(e, layers=layers) for e in traffical_sdk_batch()["events"][:2]]
    batch = RawBatch(
        family="traffical", route="/v1/events", org_id="acme", project_id="web", env="production",
        received_at=NOW, body_digest="d", events=[msgspec.Raw(msgspec.json.encode(e)) for e in events],
        indexes=[0, 1],
    )  # fmt: skip
    decision, exposure = (r for r in normalize(batch) if isinstance(r, CanonicalEvent))
    assert decision.experiment_id == "policy_other"  # assigned, so the decision names it
    assert exposure.experiment_id == "policy_discount"  # but the page saw only this one
