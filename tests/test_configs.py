"""SDK configuration: validation on load, versions, and ``sluice config|experiments put|list|rm``
reaching a gateway's registry follower within 2 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from commands.localkafka import free_port
from sluice.configs import (
    MAX_BYTES,
    ConfigError,
    as_record,
    bundle_record,
    experiment_record,
    load_bundle,
    load_experiments,
)
from sluice.registry import Registry
from sluice.registry_topic import RegistryFollower
from sluice.settings import Settings
from tests.builders import XAIKU_EXPERIMENTS, traffical_bundle
from tests.processes import gateway_url, running, sluice
from tests.sdk_requests import SDK_REQUESTS
from tests.test_registry import _within


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def test_the_spec_example_bundle_loads() -> None:
    assert json.loads(load_bundle(encode(traffical_bundle()), "proj_test", "production")) == traffical_bundle()


@pytest.mark.parametrize(
    ("bundle", "error"),
    [
        (traffical_bundle(hashing=None), "at (top level): 'hashing' is a required property"),
        (traffical_bundle(hashing={"unitKey": "userId", "bucketCount": 0}), "at hashing/bucketCount"),
        (traffical_bundle(layers=[{"id": "l", "policies": [{"id": "p"}]}]), "at layers/0/policies/0"),
        (traffical_bundle(projectId="proj_other"), "the bundle's projectId is 'proj_other'"),
        (traffical_bundle(env="staging"), "the bundle's env is 'staging'"),
    ],
)
def test_bundles_are_checked_against_the_published_schema(bundle: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_bundle(encode(bundle), "proj_test", "production")
    assert error in str(caught.value)


@pytest.mark.parametrize("data", [b"{nope", b"\xff", b"x" * 900_001])
def test_unreadable_or_huge_bundles_are_refused(data: bytes) -> None:
    with pytest.raises(ConfigError):
        load_bundle(data, "proj_test", "production")


def test_experiments_load_as_each_experiments_variants() -> None:
    loaded = load_experiments(encode(XAIKU_EXPERIMENTS))
    assert {k: json.loads(v) for k, v in loaded.items()} == XAIKU_EXPERIMENTS["experiments"]


@pytest.mark.parametrize(
    ("experiments", "error"),
    [
        ({}, "must look like"),
        ({"e": []}, "non-empty list of variants"),
        ({"e": [{"weight": 1}]}, "missing required field `id`"),
        ({"e": [{"id": "a"}, {"id": "a"}]}, "distinct"),
        ({"e": [{"id": "a", "weight": 0}]}, "weights"),
        ({"e": [{"id": "a", "weight": -1}, {"id": "b"}]}, "weights"),
        ({"e": [{"id": "a", "parts": {"title": 3}}]}, "Expected `str`"),
        ({"e": [{"id": "a", "control": "yes"}]}, "Expected `bool`"),
    ],
)
def test_experiments_the_sdk_could_not_use_are_refused(experiments: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_experiments(encode({"experiments": experiments}))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"config:not json", b"{}"),
        (b'config:["acme","p"]', b"{}"),
        (b'experiment:["acme","e"]', b"{nope"),
        (b'config:["acme","p","e"]', b'{"org_id": 1}'),
    ],
)
def test_an_unreadable_record_is_skipped_not_fatal(key: bytes, value: bytes) -> None:
    registry = Registry()
    good = bundle_record("acme", "proj_test", "production", encode(traffical_bundle()), None)
    assert good is not None
    registry.apply(*as_record(good))
    registry.apply(key, value)
    assert registry.configs.bundle("acme", "proj_test", "production") == good


def test_versions_rise_only_when_the_bytes_change() -> None:
    data = load_bundle(encode(traffical_bundle()), "proj_test", "production")
    first = bundle_record("acme", "proj_test", "production", data, None)
    assert first is not None and first.version == 1
    assert bundle_record("acme", "proj_test", "production", data, first) is None
    changed = load_bundle(encode(traffical_bundle(version="2025-01-01T00:00:00Z")), "proj_test", "production")
    second = bundle_record("acme", "proj_test", "production", changed, first)
    assert second is not None and second.version == 2 and second.digest != first.digest
    variants = load_experiments(encode(XAIKU_EXPERIMENTS))["exp_cta"]
    one = experiment_record("acme", "exp_cta", variants, None)
    assert one is not None and one.version == 1 and experiment_record("acme", "exp_cta", variants, one) is None


@pytest.mark.kafka
async def test_put_list_rm_reach_a_gateways_follower_within_two_seconds(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    bundle_file, experiments_file = tmp_path / "bundle.json", tmp_path / "experiments.json"
    bundle_file.write_bytes(encode(traffical_bundle()))
    experiments_file.write_bytes(encode(XAIKU_EXPERIMENTS))
    follower = RegistryFollower(kafka_settings.kafka_bootstrap, kafka_settings.registry_topic)
    await follower.start()
    try:
        await asyncio.wait_for(follower.ready.wait(), 10)
        configs = follower.registry.configs

        put = ["config", "put", "--org", "acme", "--project", "proj_test", "--env", "production", str(bundle_file)]
        done = await asyncio.to_thread(sluice, kafka_settings, *put)
        assert (done.returncode, done.stderr.strip()) == (0, "config acme/proj_test/production version 1")
        assert await _within(2.0, lambda: configs.bundle("acme", "proj_test", "production") is not None)
        again = await asyncio.to_thread(sluice, kafka_settings, *put)
        assert "unchanged (version 1)" in again.stderr

        done = await asyncio.to_thread(
            sluice, kafka_settings, "experiments", "put", "--org", "acme", str(experiments_file)
        )
        assert done.returncode == 0, done.stderr
        assert await _within(2.0, lambda: len(configs.experiments_of("acme")) == 3)

        listed = await asyncio.to_thread(sluice, kafka_settings, "experiments", "list", "--org", "acme")
        assert [line.split("\t")[:4] for line in listed.stdout.splitlines()] == [
            ["org", "experiment", "version", "variants"],
            ["acme", "exp_cta", "1", "2"], ["acme", "exp_hero", "1", "2"], ["acme", "exp_other", "1", "1"],
        ]  # fmt: skip
        listed = await asyncio.to_thread(sluice, kafka_settings, "config", "list")
        assert listed.stdout.splitlines()[1].split("\t")[:4] == ["acme", "proj_test", "production", "1"]

        rm = ["config", "rm", "--org", "acme", "--project", "proj_test", "--env", "production"]
        assert (await asyncio.to_thread(sluice, kafka_settings, *rm)).returncode == 0
        done = await asyncio.to_thread(sluice, kafka_settings, "experiments", "rm", "--org", "acme", "exp_cta")
        assert done.returncode == 0
        assert await _within(2.0, lambda: configs.bundle("acme", "proj_test", "production") is None)
        assert await _within(2.0, lambda: list(configs.experiments_of("acme")) == ["exp_hero", "exp_other"])
        assert (await asyncio.to_thread(sluice, kafka_settings, *rm)).returncode == 1  # already gone
    finally:
        await follower.stop()


@pytest.mark.kafka
def test_an_invalid_file_writes_nothing(kafka_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(encode(traffical_bundle(hashing=None)))
    done = sluice(kafka_settings, "config", "put", "--org", "acme", "--project", "proj_test", "--env", "production",
                  str(path))  # fmt: skip
    assert done.returncode == 2 and "config-bundle schema" in done.stderr
    listed = sluice(kafka_settings, "config", "list")
    assert listed.stdout.splitlines() == ["org\tproject\tenv\tversion\tbytes\tupdated_at"]


@pytest.mark.kafka
async def test_every_gateway_replica_serves_a_put_within_two_seconds(kafka_settings: Settings, tmp_path: Path) -> None:
    """Two gateway processes, as two replicas; the SDKs' own requests (tests/sdk_requests.py)."""
    replicas = [kafka_settings, Settings.from_env(kafka_settings.to_env(), gateway_port=free_port())]
    key = sluice(kafka_settings, "keys", "create", "--org", "acme", "--kind", "publishable", "--scope", "sdk:write")
    pk = key.stdout.strip()
    (tmp_path / "bundle.json").write_bytes(encode(traffical_bundle()))
    (tmp_path / "experiments.json").write_bytes(encode(XAIKU_EXPERIMENTS))
    traffical, xaiku = SDK_REQUESTS["traffical-config"], SDK_REQUESTS["xaiku-experiments"]

    async def statuses() -> list[int]:
        out = []
        async with aiohttp.ClientSession() as http:
            for replica in replicas:
                for sdk in (traffical, xaiku):
                    headers = {**sdk.with_key(pk), "X-experiment-ids": "exp_hero"}
                    async with http.get(gateway_url(replica) + sdk.path, headers=headers) as response:
                        out.append(response.status)
        return out

    with contextlib.ExitStack() as stack:
        for n, replica in enumerate(replicas):
            stack.enter_context(running(replica, "gateway", f"{gateway_url(replica)}/readyz", tmp_path / f"gw{n}.log"))
        assert await statuses() == [404] * 4
        put = ["config", "put", "--org", "acme", "--project", "proj_test", "--env", "production"]
        assert sluice(kafka_settings, *put, str(tmp_path / "bundle.json")).returncode == 0
        put = ["experiments", "put", "--org", "acme", str(tmp_path / "experiments.json")]
        assert sluice(kafka_settings, *put).returncode == 0
        deadline = time.monotonic() + 2.0
        for _ in range(1000):  # until every replica serves both, for 2 s at most
            if (seen := await statuses()) == [200] * 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert seen == [200] * 4


@pytest.mark.kafka
def test_a_bundle_just_under_the_limit_fits_the_topic(kafka_settings: Settings, tmp_path: Path) -> None:
    parameter = {"key": "ui.copy", "type": "string", "default": "", "layerId": "layer_ui", "namespace": "ui"}
    bundle = traffical_bundle(parameters=[parameter])
    bundle["parameters"][0]["default"] = "x" * (MAX_BYTES - len(encode(bundle)) - 100)
    path = tmp_path / "bundle.json"
    path.write_bytes(encode(bundle))
    put = ["config", "put", "--org", "acme", "--project", "proj_test", "--env", "production", str(path)]
    done = sluice(kafka_settings, *put)
    assert done.returncode == 0, done.stderr
    listed = sluice(kafka_settings, "config", "list").stdout.splitlines()[1].split("\t")
    assert int(listed[4]) > MAX_BYTES - 200
