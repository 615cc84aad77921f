"""Traffical exposure, track and decision events → canonical.

An experiment is a policy (``policyId``), a variant its allocation (``allocationName``). An
exposure or decision names them per layer; the row takes the first *allocated* layer's, and keeps
every layer in ``properties.layers`` (attribution and rollups read them all, and skip a layer
without both ids: a unit whose bucket fell in no allocation is assigned nothing there).

The key decides the tenant: the body's ``orgId``/``projectId``/``env`` are kept in ``context`` as
sent, whatever they say.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize.common import (
    as_json,
    decode_event,
    event_time,
    extras,
    message_id,
    received,
    text,
)  # fmt: skip
from sluice.envelope import RawBatch
from sluice.wire.traffical import Exposure, Layer, Track, TrafficalEvent, check_event, event_decoder, unit_of

CONTEXT_FIELDS = ("sdkName", "sdkVersion", "orgId", "projectId", "env")
COLUMN_FIELDS = (
    "type", "unitKey", "timestamp", "id", "decisionId", "userId", "anonymousId", "sessionId", "event", "properties",
)  # fmt: skip


KNOWN = frozenset(COLUMN_FIELDS + CONTEXT_FIELDS)


def first_allocated(layers: list[Layer], exposure: bool) -> Layer | None:
    """The layer the row names. An exposure never names a layer js-client marks
    ``attributionOnly`` (it lists every layer, but the page saw none of that one's parameters)."""
    return next((layer for layer in layers if layer.allocated and not (exposure and layer.attributionOnly)), None)


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    arrived = received(batch)
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        decoded = decode_event(payload, TrafficalEvent, check_event, event_decoder)
        if isinstance(decoded, str):
            yield Invalid(index, decoded, payload)
            continue
        fields, event = decoded
        track = isinstance(event, Track)
        properties = dict(event.properties) if track else {}
        properties.update(extras(fields, KNOWN))
        layer = None if track else first_allocated(event.layers, isinstance(event, Exposure))
        yield CanonicalEvent(
            org_id=batch.org_id, project_id=batch.project_id, env=batch.env,
            message_id=message_id(batch, index, event.id), family="traffical",
            type=fields["type"],
            event=event.event if track else fields["type"],
            user_id=event.userId or "",
            anonymous_id=event.anonymousId or "",
            unit_key=unit_of(event),
            session_id=text(event.sessionId, 200),
            timestamp=(stamped := event_time(event.timestamp, arrived))[0],
            original_timestamp=stamped[1],
            received_at=arrived,
            properties=as_json(properties),
            context=as_json({k: fields[k] for k in CONTEXT_FIELDS if k in fields}),
            experiment_id=layer.policyId or "" if layer else "",
            variant_id=layer.allocationName or "" if layer else "",
            decision_id=event.decisionId or "",
        )  # fmt: skip
