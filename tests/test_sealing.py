"""Identity secrets sealed in the registry topic (envelope encryption)."""

from __future__ import annotations

import time

import jwt
import msgspec
import pytest

from sluice.registry import OrgSettings, Registry, org_record
from sluice.sealing import Sealer, SealError, new_master_key
from sluice.settings import Settings
from tests.gateway_harness import harness
from tests.processes import sluice

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
    from tests.processes import registry_values

    keyed = Settings.from_env(kafka_settings.to_env(), registry_key=new_master_key())
    secret = sluice(keyed, "orgs", "set", "acme", "--identity-verification", "on").stdout.strip()
    assert secret.startswith("ha_secret_")
    values = await registry_values(keyed)
    assert values and all(secret.encode() not in v for v in values)
    again = sluice(keyed, "orgs", "set", "acme", "--identity-verification", "on").stdout.strip()
    assert again == secret  # the sealed secret was read back, not replaced
    refused = sluice(kafka_settings, "orgs", "set", "acme", "--identity-verification", "on")
    assert refused.returncode == 1 and "SLUICE_REGISTRY_KEY" in refused.stderr
