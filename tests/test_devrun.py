"""The dev org ``make run`` creates: its printed keys work with every family's browser SDK."""

from __future__ import annotations

import pytest

from commands.devrun import DEV_ENV, DEV_ORG, DEV_PROJECT, bootstrap_dev_org
from sluice.registry_topic import read_registry
from sluice.settings import Settings
from tests.builders import traffical_sdk_batch
from tests.gateway_harness import harness
from tests.sdk_requests import SDK_REQUESTS
from tests.test_gateway_common import VALID

pytestmark = pytest.mark.kafka


async def test_the_printed_publishable_key_works_on_every_route(kafka_settings: Settings) -> None:
    printed = dict(await bootstrap_dev_org(kafka_settings))
    publishable = printed["publishable (scope sdk:write)"]
    assert publishable.startswith("pk_")  # Xaiku's SDK refuses any other key
    registry = await read_registry(kafka_settings.kafka_bootstrap, kafka_settings.registry_topic)
    assert await bootstrap_dev_org(kafka_settings) == []  # printed once only
    async with harness() as h:
        h.gateway.registry = registry  # what a gateway following the topic holds
        for path, (headers, body) in VALID.items():
            response = await h.post(path, body, **headers(publishable))
            assert response.status == 200, (path, await response.text())
        # and each SDK finds configuration to assign variants from
        for name, ids in (("traffical-config", ""), ("xaiku-experiments", "exp_hero")):
            sdk = SDK_REQUESTS[name]
            response = await h.client.get(sdk.path, headers={**sdk.with_key(publishable), "X-experiment-ids": ids})
            assert response.status == 200, (name, await response.text())
        assert (await response.json())["experiments"]["exp_hero"][0]["id"] == "control"


async def test_the_traffical_sdks_events_land_in_the_example_project_without_a_mismatch(
    kafka_settings: Settings,
) -> None:
    """The example bundle is project ``proj_test``: the SDK configured as the banner says sends that
    projectId (and the org and env) with every event, and the printed key must agree with it."""
    printed = dict(await bootstrap_dev_org(kafka_settings))
    registry = await read_registry(kafka_settings.kafka_bootstrap, kafka_settings.registry_topic)
    batch = traffical_sdk_batch()
    for event in batch["events"]:
        event["orgId"] = DEV_ORG  # as the banner tells the page to configure the SDK
    async with harness() as h:
        h.gateway.registry = registry
        for key in printed.values():
            sdk = SDK_REQUESTS["traffical-events"]
            response = await h.post(sdk.path, batch, **sdk.with_key(key))
            assert (response.status, await response.json()) == (200, {"accepted": 3, "written": 3})
        assert {(r.org_id, r.project_id, r.env) for r in h.raw()} == {(DEV_ORG, DEV_PROJECT, DEV_ENV)}
        metrics = await (await h.client.get("/metrics")).text()
        assert "sluice_gateway_tenant_mismatch_total{" not in metrics
