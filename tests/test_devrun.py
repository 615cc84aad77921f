"""The dev org ``make run`` creates: its printed keys work with every family's browser SDK."""

from __future__ import annotations

import pytest

from sluice.devrun import bootstrap_dev_org
from sluice.registry import read_registry
from sluice.settings import Settings
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
