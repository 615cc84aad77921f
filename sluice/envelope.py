"""The record the gateway writes to the raw topic, one per accepted request.

The gateway checks the envelope and each event's shape, then forwards the accepted events as
the client sent them (``msgspec.Raw``: unknown fields survive untouched); the worker does the
normalizing. ``indexes`` keeps each event's position in the request, so that an event without a
message id gets the same :func:`derived_message_id` however often the SDK retries the request.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

MAX_RECORD_BYTES = 900_000
"""Bytes of a record the worker writes (keyed items, dead letters): under Kafka's default 1 MB
message limit, which the keyed and dead-letter topics keep."""
RAW_RECORD_BYTES = 4 << 20
"""Bytes of a record on the raw and registry topics, which Sluice creates with this
``max.message.bytes`` (``sluice.topics``): the gateway's producer and the worker's fetches take it."""

Family = Literal["halo", "xaiku", "solute", "traffical", "segment", "posthog"]


class RawBatch(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    v: int = 1
    family: Family
    route: str
    org_id: str
    project_id: str
    env: str
    received_at: float
    """Gateway clock, epoch seconds, when the request arrived."""
    body_digest: str
    """sha256 hex of the request body, the seed of derived message ids."""
    events: list[msgspec.Raw]
    indexes: list[int]
    sent_at: str | None = None
    """The batch's own ``sentAt`` (client clock), when the family sends one."""
    batch: dict[str, msgspec.Raw] = {}
    """Batch-level fields that apply to every event (``user_id``, ``session_id``…)."""


class DeadLetter(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An event refused as invalid, with why, where it came from and its original bytes."""

    family: str
    route: str
    org_id: str
    reason: str
    received_at: float
    payload: msgspec.Raw
    source: str = "gateway"
    index: int | None = None
    project_id: str = ""
    env: str = ""
    batch: dict[str, msgspec.Raw] = {}
    id: str = ""
    """A stable id when the same letter may be sent twice (a replay): the ``dlq`` table keeps one."""


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def derived_message_id(org_id: str, digest: str, index: int) -> str:
    """A stable id for an event that carries none: same org, same body, same slot ⇒ same id."""
    return hashlib.sha256(f"{org_id}\x00{digest}\x00{index}".encode()).hexdigest()[:32]


encoder = msgspec.json.Encoder()
raw_batch_decoder = msgspec.json.Decoder(RawBatch)
