"""API keys: hashed records, constant-time checks, and propagation through the registry topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sluice.registry import (
    OrgSettings,
    Registry,
    hash_key,
    key_record,
    new_key,
    org_record,
    parse_duration,
)
from sluice.registry_topic import RegistryFollower, write_records
from sluice.settings import Settings


def test_new_key_stores_only_a_digest() -> None:
    key, record = new_key("acme", "publishable", prefix="ab_live_", now=100.0, expires_in=60)
    assert key.startswith("ab_live_") and len(key) > 40
    assert record.digest == hash_key(key)
    assert key not in repr(record) and key[8:] not in record.hint
    assert (record.created_at, record.expires_at) == (100.0, 160.0)


@pytest.mark.parametrize("prefix", ["pk", "PK_", "has space_", "x" * 40 + "_"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="key prefix"):
        new_key("acme", "secret", prefix=prefix)


def test_authenticate_honours_revocation_and_expiry() -> None:
    registry = Registry()
    key, record = new_key("acme", "secret", now=0.0, expires_in=10)
    registry.apply(*key_record(record))
    assert registry.authenticate(key, now=5.0) == record
    assert registry.authenticate(key, now=10.0) is None
    assert registry.authenticate(key + "x", now=5.0) is None
    record.revoked = True
    registry.apply(*key_record(record))
    assert registry.authenticate(key, now=5.0) is None


def test_tombstones_remove_records() -> None:
    registry = Registry()
    _, record = new_key("acme", "secret")
    registry.apply(*key_record(record))
    registry.apply(f"key:{record.digest}".encode(), None)
    assert registry.keys == {}


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2_592_000), ("12h", 43_200), ("15m", 900), ("9s", 9)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


@pytest.mark.kafka
async def test_a_new_or_revoked_key_reaches_a_follower_within_two_seconds(kafka_settings: Settings) -> None:
    bootstrap, topic = kafka_settings.kafka_bootstrap, kafka_settings.registry_topic
    old_key, old = new_key("acme", "publishable")
    await write_records(bootstrap, topic, [key_record(old), org_record(OrgSettings(org_id="acme"))])
    follower = RegistryFollower(bootstrap, topic)
    await follower.start()
    try:
        await asyncio.wait_for(follower.ready.wait(), 10)
        assert follower.registry.authenticate(old_key) == old  # existing keys are there when ready

        key, record = new_key("acme", "secret", scopes=["sdk:write"])
        await write_records(bootstrap, topic, [key_record(record)])
        assert await _within(2.0, lambda: follower.registry.authenticate(key) is not None)

        record.revoked = True
        await write_records(bootstrap, topic, [key_record(record)])
        assert await _within(2.0, lambda: follower.registry.authenticate(key) is None)
    finally:
        await follower.stop()


async def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return False


def test_a_record_that_does_not_decode_raises_value_error_for_the_follower_to_skip() -> None:
    registry = Registry()
    for key, value in ((b"key:d", b"\xff{"), (b"org:acme", b'{"org_id": 5}'), (b"\xff\xfe", b"{}"), (b"key:d", b"[]")):
        with pytest.raises(ValueError):
            registry.apply(key, value)
    assert registry.keys == {} and registry.orgs == {}


@pytest.mark.kafka
async def test_bad_records_are_skipped_counted_and_block_nothing(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap, topic = kafka_settings.kafka_bootstrap, kafka_settings.registry_topic
    key, record = new_key("acme", "publishable")
    bad = [(b"key:bad", b"\xffsecret-looking garbage"), (b"org:acme", b'{"org_id": 5}'), (b"\xff\xfe", b"{}")]
    await write_records(bootstrap, topic, [*bad, key_record(record)])
    follower = RegistryFollower(bootstrap, topic)
    follower.CHECK_SECONDS = 0.2
    await follower.start()
    try:
        await asyncio.wait_for(follower.ready.wait(), 10)  # bad records present at start: ready anyway
        assert follower.registry.authenticate(key) == record
        assert follower.skipped == 3 and follower.healthy()

        record.revoked = True  # a bad record later does not stop revocations
        await write_records(bootstrap, topic, [(b"key:worse", b"{"), key_record(record)])
        assert await _within(2.0, lambda: follower.registry.authenticate(key) is None)
        assert follower.skipped == 4 and follower.healthy()

        follower.caught_up_at -= follower.stale_after  # as if it had not caught up for that long
        assert not follower.healthy()
        assert await _within(2.0, follower.healthy)  # the next check finds it caught up
        assert follower.lag == 0
    finally:
        await follower.stop()
    assert not follower.healthy()  # a stopped follower is not
    assert "registry record skipped at offset 0" in caplog.text and "garbage" not in caplog.text
