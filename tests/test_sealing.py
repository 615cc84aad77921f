"""Identity secrets sealed in the registry topic (envelope encryption)."""

from __future__ import annotations

import asyncio
import time

import jwt
import msgspec
import pytest
from prometheus_client import generate_latest

from services.gateway.metrics import GatewayMetrics
from sluice.registry import OrgSettings, Registry, org_record
from sluice.registry_topic import RegistryFollower
from sluice.sealing import Sealer, SealError, new_master_key
from sluice.settings import Settings
from tests.gateway_harness import harness
from tests.processes import registry_values, sluice

SECRET = "ha_secret_sealed_0123456789abcdef"


def test_a_sealed_secret_opens_only_with_its_key_and_its_org() -> None:
    key, other = new_master_key(), new_master_key()
    sealed = Sealer(key).seal(SECRET, "acme")
    assert SECRET not in msgspec.json.encode(sealed).decode()
    assert Sealer(key).open(sealed, "acme") == SECRET
    with pytest.raises(SealError):
        Sealer(key).open(sealed, "globex")  # copied into another org's record
    with pytest.raises(SealError):
        Sealer(other).open(sealed, "acme")
    rotated = Sealer(f"{other},{key}")  # the new key seals, the old one still opens
    assert rotated.open(sealed, "acme") == SECRET
    assert rotated.seal(SECRET, "acme").kid != sealed.kid
    with pytest.raises(ValueError, match="256-bit"):
        Sealer("c2hvcnQ=")


def test_the_registry_record_holds_no_plaintext_and_a_gateway_without_the_key_fails_closed() -> None:
    key = new_master_key()
    record = org_record(OrgSettings(org_id="acme", identity_verification=True, identity_secret=SECRET), Sealer(key))
    assert SECRET.encode() not in record[1]
    with_key, without = Registry(Sealer(key)), Registry()
    with_key.apply(*record)
    without.apply(*record)
    assert with_key.org("acme").identity_secret == SECRET
    assert without.org("acme").identity_verification and without.org("acme").identity_secret == ""


async def test_a_gateway_without_the_key_refuses_what_needs_a_token() -> None:
    key = new_master_key()
    async with harness() as h:
        h.registry.apply(
            *org_record(OrgSettings(org_id="acme", identity_verification=True, identity_secret=SECRET), Sealer(key))
        )
        token = jwt.encode({"user_id": "alice", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        response = await h.post("/api/sdk/users/identify", {"user_id": "alice", "user_token": token},
                                Authorization=f"Bearer {h.key()}")  # fmt: skip
        assert response.status == 403


@pytest.mark.kafka
async def test_orgs_set_seals_the_secret_in_the_topic(kafka_settings: Settings) -> None:
    keyed = Settings.from_env(kafka_settings.to_env(), registry_key=new_master_key())
    secret = sluice(keyed, "orgs", "set", "acme", "--identity-verification", "on").stdout.strip()
    assert secret.startswith("ha_secret_")
    values = await registry_values(keyed)
    assert values and all(secret.encode() not in v for v in values)
    again = sluice(keyed, "orgs", "set", "acme", "--identity-verification", "on").stdout.strip()
    assert again == secret  # the sealed secret was read back, not replaced
    refused = sluice(kafka_settings, "orgs", "set", "acme", "--identity-verification", "on")
    assert refused.returncode == 1 and "SLUICE_REGISTRY_KEY" in refused.stderr


def test_a_plaintext_secret_read_while_a_registry_key_is_set_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = org_record(OrgSettings(org_id="acme", identity_verification=True, identity_secret=SECRET))  # unsealed
    keyed, unkeyed = Registry(Sealer(new_master_key())), Registry()
    keyed.apply(*record)
    unkeyed.apply(*record)
    assert keyed.org("acme").identity_secret == SECRET  # still works: verification must not break
    assert (keyed.plaintext_secrets, unkeyed.plaintext_secrets) == (1, 0)
    assert "org acme: its identity secret is stored in plaintext" in caplog.text and SECRET not in caplog.text
    metrics = GatewayMetrics()
    metrics.state.follower = RegistryFollower("127.0.0.1:9", "registry", keyed)  # not started: read only
    assert b"sluice_registry_plaintext_secrets_total 1.0" in generate_latest(metrics.registry)


def user_token(user_id: str, secret: str) -> str:
    return jwt.encode({"user_id": user_id, "exp": int(time.time()) + 600}, secret, algorithm="HS256")


@pytest.mark.kafka
async def test_orgs_set_rotates_the_identity_secret_and_gateways_refuse_the_old_one(kafka_settings: Settings) -> None:
    master = new_master_key()
    keyed = Settings.from_env(kafka_settings.to_env(), registry_key=master)
    old = sluice(keyed, "orgs", "set", "acme", "--identity-verification", "on").stdout.strip()
    follower = RegistryFollower(keyed.kafka_bootstrap, keyed.registry_topic, Registry(Sealer(master)))
    await follower.start()
    try:
        await asyncio.wait_for(follower.ready.wait(), 30)
        assert follower.registry.org("acme").identity_secret == old
        rotated = sluice(keyed, "orgs", "set", "acme", "--rotate-identity-secret")
        new = rotated.stdout.strip()
        assert rotated.returncode == 0 and new.startswith("ha_secret_") and new != old
        deadline = time.monotonic() + 5  # a gateway's follower reads it within seconds
        while follower.registry.org("acme").identity_secret != new:
            assert time.monotonic() < deadline, "the rotated secret did not reach the follower"
            await asyncio.sleep(0.05)
        assert follower.registry.org("acme").identity_verification  # unchanged by a rotation
        async with harness() as h:
            h.gateway.registry = follower.registry
            h.now = time.time()
            key = h.key(org="acme")
            answers = [
                (await h.post("/api/sdk/users/identify", {"user_id": "alice", "user_token": user_token("alice", s)},
                              Authorization=f"Bearer {key}")).status
                for s in (old, new)
            ]  # fmt: skip
            assert answers == [403, 200]
    finally:
        await follower.stop()
    assert all(new.encode() not in v for v in await registry_values(keyed))  # sealed, like the first
    # a lost registry key: the sealed secret no longer opens, but a rotation seals a fresh one
    other = Settings.from_env(kafka_settings.to_env(), registry_key=new_master_key())
    assert sluice(other, "orgs", "set", "acme", "--identity-verification", "on").returncode == 1
    recovered = sluice(other, "orgs", "set", "acme", "--rotate-identity-secret")
    assert recovered.returncode == 0 and recovered.stdout.strip() not in (old, new)
    nothing = sluice(keyed, "orgs", "set", "acme")
    assert nothing.returncode == 2 and "--rotate-identity-secret" in nothing.stderr
