"""``GET /v1/config/{projectId}`` (Traffical) and ``GET /api/v1/experiments`` (Xaiku): what each
SDK fetches at start-up, requested exactly as the SDK requests it (tests/sdk_requests.py)."""

from __future__ import annotations

import msgspec
import pytest

from tests.builders import XAIKU_EXPERIMENTS, traffical_bundle
from tests.gateway_harness import Harness
from tests.sdk_requests import SDK_REQUESTS

TRAFFICAL = SDK_REQUESTS["traffical-config"]
TRAFFICAL_REFRESH = SDK_REQUESTS["traffical-config-refresh"]
XAIKU = SDK_REQUESTS["xaiku-experiments"]


@pytest.fixture
def pk(gw: Harness) -> str:
    """The browser key of the org the configuration belongs to."""
    return gw.key("publishable", org="org_acme", prefix="pk_", scopes=("sdk:write",))


async def test_traffical_sdk_gets_its_bundle_then_304_until_it_changes(gw: Harness, pk: str) -> None:
    bundle = traffical_bundle()
    etag = gw.config("org_acme", "proj_test", "production", bundle)
    first = await gw.client.get(TRAFFICAL.path, headers=TRAFFICAL.with_key(pk))
    assert first.status == 200 and await first.json() == bundle
    assert first.headers["ETag"] == etag and first.headers["Content-Type"].startswith("application/json")
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    assert "ETag" in first.headers["Access-Control-Expose-Headers"]  # the SDK reads it cross-origin

    refresh = await gw.client.get(TRAFFICAL_REFRESH.path, headers={**TRAFFICAL.with_key(pk), "If-None-Match": etag})
    assert (refresh.status, await refresh.read(), refresh.headers["ETag"]) == (304, b"", etag)

    changed = traffical_bundle(version="2024-02-01T00:00:00.000Z")
    new_etag = gw.config("org_acme", "proj_test", "production", changed)
    after = await gw.client.get(TRAFFICAL_REFRESH.path, headers={**TRAFFICAL.with_key(pk), "If-None-Match": etag})
    assert (after.status, after.headers["ETag"], await after.json()) == (200, new_etag, changed)


@pytest.mark.parametrize("header", ['W/"{etag}"', '"other", "{etag}"', "*"])
async def test_if_none_match_lists_and_weak_tags(gw: Harness, pk: str, header: str) -> None:
    etag = gw.config("org_acme", "proj_test", "production", traffical_bundle())
    headers = {**TRAFFICAL.with_key(pk), "If-None-Match": header.format(etag=etag.strip('"'))}
    assert (await gw.client.get(TRAFFICAL.path, headers=headers)).status == 304


async def test_traffical_env_defaults_to_the_keys(gw: Harness, pk: str) -> None:
    gw.config("org_acme", "proj_test", "production", traffical_bundle())
    response = await gw.client.get("/v1/config/proj_test", headers=TRAFFICAL.with_key(pk))
    assert response.status == 200


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/config/proj_other?env=production", "No config bundle for project 'proj_other' in env 'production'"),
        ("/v1/config/proj_test?env=staging", "No config bundle for project 'proj_test' in env 'staging'"),
    ],
)
async def test_traffical_unknown_project_or_env_is_the_familys_404(
    gw: Harness, pk: str, path: str, message: str
) -> None:
    gw.config("org_acme", "proj_test", "production", traffical_bundle())
    response = await gw.client.get(path, headers=TRAFFICAL.with_key(pk))
    assert (response.status, await response.json()) == (404, {"error": "Not Found", "message": message})


async def test_configuration_is_scoped_to_the_keys_org(gw: Harness) -> None:
    gw.config("org_acme", "proj_test", "production", traffical_bundle())
    gw.experiments("org_acme", XAIKU_EXPERIMENTS)
    other = gw.key("publishable", org="org_other", prefix="pk_", scopes=("sdk:write",))
    assert (await gw.client.get(TRAFFICAL.path, headers=TRAFFICAL.with_key(other))).status == 404
    assert (await gw.client.get(XAIKU.path, headers=XAIKU.with_key(other))).status == 404


@pytest.mark.parametrize(("key", "message"), [(None, "Missing API key"), ("pk_nope", "Invalid or expired API key")])
async def test_traffical_config_needs_a_key(gw: Harness, key: str | None, message: str) -> None:
    gw.config("org_acme", "proj_test", "production", traffical_bundle())
    headers = TRAFFICAL.with_key(key) if key else {}
    response = await gw.client.get(TRAFFICAL.path, headers=headers)
    assert (response.status, await response.json()) == (401, {"error": "Unauthorized", "message": message})


async def test_xaiku_sdk_gets_the_experiments_it_names(gw: Harness, pk: str) -> None:
    gw.experiments("org_acme", XAIKU_EXPERIMENTS)
    headers = {**XAIKU.with_key(pk), "X-experiment-ids": "exp_hero, exp_cta,exp_unknown"}
    response = await gw.client.get(XAIKU.path, headers=headers)
    assert response.status == 200
    assert await response.json() == {
        "experiments": {k: XAIKU_EXPERIMENTS["experiments"][k] for k in ("exp_cta", "exp_hero")}
    }
    assert response.headers["Cache-Control"] == "private, no-cache" and response.headers["ETag"]
    again = await gw.client.get(XAIKU.path, headers={**headers, "If-None-Match": response.headers["ETag"]})
    assert again.status == 304


async def test_xaiku_without_ids_gets_every_experiment_of_the_org(gw: Harness, pk: str) -> None:
    gw.experiments("org_acme", XAIKU_EXPERIMENTS)
    response = await gw.client.get(XAIKU.path, headers={**XAIKU.with_key(pk), "X-experiment-ids": ""})
    assert await response.json() == XAIKU_EXPERIMENTS


async def test_xaiku_test_mode_is_never_cached(gw: Harness, pk: str) -> None:
    gw.experiments("org_acme", XAIKU_EXPERIMENTS)
    sdk = SDK_REQUESTS["xaiku-experiments-test-mode"]
    response = await gw.client.get(sdk.path, headers={**sdk.with_key(pk), "X-experiment-ids": "exp_cta"})
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    assert list((await response.json())["experiments"]) == ["exp_cta"]


async def test_xaiku_unknown_experiments_and_bad_keys(gw: Harness, pk: str) -> None:
    gw.experiments("org_acme", XAIKU_EXPERIMENTS)
    missing = await gw.client.get(XAIKU.path, headers={**XAIKU.with_key(pk), "X-experiment-ids": "exp_gone"})
    assert (missing.status, await missing.json()) == (404, {"error": "No such experiments"})
    secret = gw.key("secret", org="org_acme")
    refused = await gw.client.get(XAIKU.path, headers=XAIKU.with_key(secret))
    assert (refused.status, await refused.json()) == (401, {"error": "This endpoint needs a publishable key"})


async def test_an_org_without_experiments_is_404(gw: Harness, pk: str) -> None:
    response = await gw.client.get(XAIKU.path, headers={**XAIKU.with_key(pk), "X-experiment-ids": ""})
    assert (response.status, await response.json()) == (404, {"error": "No experiments for this key's org"})


async def test_config_requests_are_counted_by_route_pattern(gw: Harness, pk: str) -> None:
    gw.config("org_acme", "proj_test", "production", traffical_bundle())
    await gw.client.get(TRAFFICAL.path, headers=TRAFFICAL.with_key(pk))
    await gw.client.get("/v1/config/nope", headers=TRAFFICAL.with_key(pk))
    text = await (await gw.client.get("/metrics")).text()
    assert 'sluice_gateway_requests_total{route="/v1/config/{projectId}",status="200"} 1.0' in text
    assert 'sluice_gateway_requests_total{route="/v1/config/{projectId}",status="404"} 1.0' in text


async def test_a_removed_bundle_is_404(gw: Harness, pk: str) -> None:
    from sluice.configs import bundle_key

    gw.config("org_acme", "proj_test", "production", traffical_bundle())
    gw.registry.apply(bundle_key("org_acme", "proj_test", "production"), None)
    assert (await gw.client.get(TRAFFICAL.path, headers=TRAFFICAL.with_key(pk))).status == 404


def test_served_bytes_are_the_loaded_bundle() -> None:
    from sluice.configs import load_bundle

    bundle = traffical_bundle()
    assert msgspec.json.decode(load_bundle(msgspec.json.encode(bundle), "proj_test", "production")) == bundle
