"""Segment HTTP Tracking API events → canonical.

- A batch's ``context`` and ``integrations`` are merged into each item's (the item's keys win);
  ``integrations`` is kept in ``context.integrations``.
- Time, as Segment computes it: ``timestamp = receivedAt − (sentAt − originalTimestamp)``, where
  the client's time is ``originalTimestamp``, else ``timestamp`` (the server SDKs send that), and
  ``sentAt`` is the event's own, else the batch's. Without a ``sentAt`` the client's time is taken
  as it is. The client's time as sent stays in ``context.originalTimestamp``.
- identify → the user's traits; group → the company's traits (``groupId``) and the user's
  membership; alias → ``previousId`` an alias of ``userId``; page and screen are kept as such.
- The spec's "Experiment Viewed" track is an exposure of the unit to ``experiment_id`` (else
  ``experiment_name``) in ``variation_id`` (else ``variation_name``); other tracks are attributed
  to the unit's experiments like every family's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize.common import (
    JSON,
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
from sluice.wire.segment import EXPERIMENT_VIEWED, SegmentEvent, check, kind_of, text_id, unit_of

FIELDS = frozenset(SegmentEvent.__struct_fields__)


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    arrived = received(batch)
    shared_context = _batch_object(batch, "context")
    shared_integrations = _batch_object(batch, "integrations")
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        decoded = decode_event(payload, SegmentEvent, lambda e: check(e, kind_of(batch.route, e)))
        if isinstance(decoded, str):
            yield Invalid(index, decoded, payload)
            continue
        fields, event = decoded
        kind = kind_of(batch.route, event) or "track"
        context: dict[str, Any] = {**shared_context, **(event.context or {})}
        integrations = {**shared_integrations, **(event.integrations or {})}
        if integrations:
            context["integrations"] = integrations
        if unknown := extras(fields, FIELDS):
            context["extra"] = unknown
        own = event.originalTimestamp or event.timestamp
        sent = parse_time(event.sentAt or batch.sent_at)
        if own is not None:
            context["originalTimestamp"] = own
        timestamp, replaced = event_time(parse_time(own), arrived, skew(arrived, sent))
        properties = dict(event.properties or {})
        if kind in ("page", "screen"):
            properties.update({k: v for k, v in (("name", event.name), ("category", event.category)) if v})
        experiment, variant = _exposure(event.event, properties) if kind == "track" else ("", "")
        traits = event.traits if event.traits is not None else _context_traits(context, kind)
        page = context.get("page")
        user_id = text_id(event.userId)
        yield CanonicalEvent(
            org_id=batch.org_id, project_id=batch.project_id, env=batch.env,
            message_id=message_id(batch, index, event.messageId), family="segment",
            type="exposure" if experiment else kind,
            event=event.event or event.name or "",
            user_id=user_id,
            anonymous_id=text_id(event.anonymousId),
            unit_key=unit_of(event),
            session_id=text(context.get("sessionId"), SESSION_ID_MAX),
            timestamp=timestamp,
            original_timestamp=replaced,
            received_at=arrived,
            sent_at=representable(sent),
            properties=as_json(properties),
            context=as_json(context),
            traits=as_json(traits),
            experiment_id=experiment,
            variant_id=variant,
            page_url=text(page.get("url"), 2000) if isinstance(page, dict) else "",
            group_id=text_id(event.groupId),
            previous_id=text_id(event.previousId),
        )  # fmt: skip


def _exposure(name: str | None, properties: dict[str, Any]) -> tuple[str, str]:
    """(experiment, variant) of an "Experiment Viewed" track, else ("", "")."""
    if name != EXPERIMENT_VIEWED:
        return "", ""
    experiment = text(properties.get("experiment_id")) or text(properties.get("experiment_name"))
    variant = text(properties.get("variation_id")) or text(properties.get("variation_name"))
    return (experiment[:200], variant[:200]) if experiment and variant else ("", "")


def _context_traits(context: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """analytics.js puts a user's traits in ``context.traits`` of its calls; an identify without
    ``traits`` takes those."""
    traits = context.get("traits")
    return traits if kind == "identify" and isinstance(traits, dict) else None


def _batch_object(batch: RawBatch, name: str) -> dict[str, Any]:
    raw = batch.batch.get(name)
    value = JSON.decode(raw) if raw is not None else None
    return value if isinstance(value, dict) else {}
