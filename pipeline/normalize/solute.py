"""Solute (Segment-style) events → canonical."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize.common import (
    SESSION_ID_MAX,
    as_json,
    decode_event,
    event_time,
    extras,
    message_id,
    parse_time,
    received,
    representable,
    skew,
    text,
)  # fmt: skip
from sluice.envelope import RawBatch
from sluice.wire.solute import SoluteEvent, check, unit_of

FIELDS = frozenset(SoluteEvent.__struct_fields__)


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    arrived = received(batch)
    sent = parse_time(batch.sent_at)
    shift = skew(arrived, sent)
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        decoded = decode_event(payload, SoluteEvent, check)
        if isinstance(decoded, str):
            yield Invalid(index, decoded, payload)
            continue
        fields, event = decoded
        context = dict(event.context)
        if unknown := extras(fields, FIELDS):
            context["extra"] = unknown
        properties = dict(event.properties)
        if event.type == "page":
            properties.update({k: v for k, v in (("name", event.name), ("category", event.category)) if v})
        page = context.get("page")
        timestamp, original = event_time(event.timestamp, arrived, shift)
        yield CanonicalEvent(
            org_id=batch.org_id,
            project_id=batch.project_id,
            env=batch.env,
            message_id=message_id(batch, index, event.messageId),
            family="solute",
            type=event.type,
            event=event.event or event.name or "",
            user_id=event.userId or "",
            anonymous_id=event.anonymousId or "",
            unit_key=unit_of(event),
            session_id=text(context.get("sessionId"), SESSION_ID_MAX),
            timestamp=timestamp,
            original_timestamp=original,
            received_at=arrived,
            sent_at=representable(sent),
            properties=as_json(properties),
            context=as_json(context),
            traits=as_json(event.traits),
            page_url=text(page.get("url")) if isinstance(page, dict) else "",
            group_id=event.groupId or "",
            previous_id=event.previousId or "",
        )
