"""Raw batches (one per accepted request) → canonical events, one family mapper each.

A mapper never raises for bad input: each event either becomes a :class:`CanonicalEvent` or an
:class:`Invalid` with its reason, which goes to the dead-letter topic. Field mappings per family
are written down in ``docs/field-mapping.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from pipeline.canonical import CanonicalEvent
from sluice.envelope import RawBatch, derived_message_id
from sluice.wire import solute

SESSION_ID_MAX = 200


class Invalid(msgspec.Struct):
    index: int
    reason: str
    payload: msgspec.Raw


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def sent_at(batch: RawBatch) -> datetime | None:
    """The batch's ``sentAt`` (client clock), if it sent a readable one."""
    try:
        return _utc(datetime.fromisoformat(batch.sent_at)) if batch.sent_at else None
    except ValueError:
        return None


def _json(value: dict[str, Any]) -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode(value)) if value else msgspec.Raw(b"{}")


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    if batch.family == "solute":
        yield from _solute(batch)
    else:
        for index, payload in zip(batch.indexes, batch.events, strict=True):
            yield Invalid(index, f"family {batch.family} is not handled yet", payload)


_SOLUTE_FIELDS = set(solute.SoluteEvent.__struct_fields__)


def _solute(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    received = datetime.fromtimestamp(batch.received_at, UTC)
    sent = sent_at(batch)
    # Clock-skew correction: the client stamped both timestamp and sentAt with its own clock,
    # so timestamp + (receivedAt - sentAt) is the event's time on the gateway's clock.
    shift = received - sent if sent else timedelta(0)
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        try:
            fields = msgspec.json.decode(payload)
            event = msgspec.convert(fields, solute.SoluteEvent)
        except msgspec.ValidationError as exc:
            yield Invalid(index, str(exc), payload)
            continue
        reason = solute.check(event)
        if reason:
            yield Invalid(index, reason, payload)
            continue
        context = dict(event.context)
        extra = {k: v for k, v in fields.items() if k not in _SOLUTE_FIELDS}
        if extra:
            context["extra"] = extra
        properties = dict(event.properties)
        if event.type == "page":
            properties.update({k: v for k, v in (("name", event.name), ("category", event.category)) if v})
        page = context.get("page")
        session = context.get("sessionId")
        yield CanonicalEvent(
            org_id=batch.org_id,
            project_id=batch.project_id,
            env=batch.env,
            message_id=event.messageId or derived_message_id(batch.org_id, batch.body_digest, index),
            family="solute",
            type=event.type,
            event=event.event or event.name or "",
            user_id=event.userId or "",
            anonymous_id=event.anonymousId or "",
            unit_key=event.userId or event.anonymousId or "",
            session_id=str(session)[:SESSION_ID_MAX] if session else "",
            timestamp=_utc(event.timestamp) + shift,
            received_at=received,
            sent_at=sent,
            properties=_json(properties),
            context=_json(context),
            traits=_json(event.traits),
            page_url=str(page.get("url") or "") if isinstance(page, dict) else "",
            group_id=event.groupId or "",
            previous_id=event.previousId or "",
        )
