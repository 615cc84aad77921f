"""aiokafka options from the SLUICE_KAFKA_* settings."""

from __future__ import annotations

import ssl

import pytest

from sluice.kafkaconf import kafka_security
from sluice.settings import Settings


def test_plaintext_adds_nothing() -> None:
    assert kafka_security(Settings.from_env({})) == {}


def test_sasl_ssl_with_scram() -> None:
    options = kafka_security(Settings.from_env({
        "SLUICE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SLUICE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SLUICE_KAFKA_USERNAME": "sluice-gateway", "SLUICE_KAFKA_PASSWORD": "pw",
    }))  # fmt: skip
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "sluice-gateway", "sasl_plain_password": "pw",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"SLUICE_KAFKA_SECURITY_PROTOCOL": "SASL"}, "SECURITY_PROTOCOL"),
        ({"SLUICE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SLUICE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "MECHANISM"),
        ({"SLUICE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SLUICE_KAFKA_USERNAME": "u"}, "PASSWORD"),
    ],
)
def test_incomplete_settings_are_refused_at_start(env: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        kafka_security(Settings.from_env(env))
