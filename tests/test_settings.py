"""The typed settings object and its round trip through a child process's environment."""

from __future__ import annotations

import msgspec
import pytest

from sluice.settings import Settings


def test_defaults_match_the_design() -> None:
    settings = Settings.from_env({})
    assert (settings.gateway_host, settings.gateway_port) == ("127.0.0.1", 8080)
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert (settings.raw_topic, settings.registry_topic, settings.dlq_topic) == (
        "sluice.raw", "sluice.registry", "sluice.dlq",
    )  # fmt: skip
    assert str(settings.warehouse_path) == ".sluice/warehouse"


def test_environment_values_are_converted_to_their_types() -> None:
    settings = Settings.from_env({"SLUICE_RAW_PARTITIONS": "12", "SLUICE_PRODUCE_TIMEOUT": "2.5"})
    assert settings.raw_partitions == 12 and settings.produce_timeout == 2.5


def test_overrides_win_and_to_env_round_trips() -> None:
    settings = Settings.from_env({"SLUICE_GATEWAY_PORT": "1"}, gateway_port=2, topic_prefix="t.")
    assert settings.gateway_port == 2
    assert Settings.from_env(settings.to_env()) == settings


def test_a_bad_value_is_a_clear_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="gateway_port"):
        Settings.from_env({"SLUICE_GATEWAY_PORT": "eighty"})
