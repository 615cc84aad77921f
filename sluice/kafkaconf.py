"""How Sluice's Kafka clients authenticate: aiokafka options from the ``SLUICE_KAFKA_*`` settings.

Locally the broker is plaintext and these are empty. In production (the ``prod`` overlay) the
listener is TLS with SCRAM-SHA-512, and each component has its own Kafka user with only the ACLs
it needs (``docs/security.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from sluice.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def kafka_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise ValueError(f"SLUICE_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}")
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ca_file or None)
    if protocol.startswith("SASL"):
        if settings.kafka_sasl_mechanism not in MECHANISMS:
            raise ValueError(f"SLUICE_KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}")
        if not (settings.kafka_username and settings.kafka_password):
            raise ValueError("SASL needs SLUICE_KAFKA_USERNAME and SLUICE_KAFKA_PASSWORD")
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_username,
            sasl_plain_password=settings.kafka_password,
        )
    return options


def durable_producer(bootstrap: str, security: Mapping[str, Any] | None = None, **options: Any) -> AIOKafkaProducer:
    """The one way Sluice makes a producer: ``acks=all`` and idempotent (a record is acknowledged
    only once every in-sync replica has it, and a retried send is not written twice), logged in
    as ``security`` says (:func:`kafka_security`); ``options`` add to or override aiokafka's (a
    transactional id, batching, a partitioner). Made inside the running loop, which it belongs to."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **{**(security or {}), **options}
    )
