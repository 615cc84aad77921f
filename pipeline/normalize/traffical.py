"""Traffical exposure, track and decision events → canonical.

An experiment is a policy (``policyId``), a variant its allocation (``allocationName``). An
exposure or decision names them per layer; the row takes the first layer's, and keeps every layer
in ``properties.layers`` (attribution and rollups read them all).
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.canonical import CanonicalEvent
from pipeline.normalize.common import (
    Invalid,
    as_json,
    decode_event,
    event_time,
    extras,
    message_id,
    received,
    text,
)  # fmt: skip
from sluice.envelope import RawBatch
from sluice.wire.traffical import Track, TrafficalEvent, check_event

CONTEXT_FIELDS = ("sdkName", "sdkVersion", "orgId", "projectId", "env")
COLUMN_FIELDS = ("type", "unitKey", "timestamp", "id", "decisionId", "userId", "sessionId", "event", "properties")


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    arrived = received(batch)
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        decoded = decode_event(payload, TrafficalEvent, lambda e: check_event(e, batch.org_id))
        if isinstance(decoded, str):
            yield Invalid(index, decoded, payload)
            continue
        fields, event = decoded
        properties = dict(event.properties) if isinstance(event, Track) else {}
        properties.update(extras(fields, COLUMN_FIELDS + CONTEXT_FIELDS))
        layers = [] if isinstance(event, Track) else event.layers
        yield CanonicalEvent(
            org_id=batch.org_id, project_id=batch.project_id, env=batch.env,
            message_id=message_id(batch, index, event.id), family="traffical",
            type=fields["type"],
            event=event.event if isinstance(event, Track) else fields["type"],
            user_id=event.userId or "",
            unit_key=event.unitKey,
            session_id=text(event.sessionId, 200),
            timestamp=(stamped := event_time(event.timestamp, arrived))[0],
            original_timestamp=stamped[1],
            received_at=arrived,
            properties=as_json(properties),
            context=as_json({k: fields[k] for k in CONTEXT_FIELDS if k in fields}),
            experiment_id=layers[0].policyId if layers else "",
            variant_id=layers[0].allocationName if layers else "",
            decision_id=event.decisionId or "",
        )  # fmt: skip
