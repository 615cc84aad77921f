"""Halo behavioural events, user identify and company identify → canonical.

Field caps from the Halo page are applied here, by cutting: event_type 100, element_selector
500, page_url 2,000, session_id 200 characters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize.common import (
    JSON,
    as_json,
    decode_object,
    event_time,
    extras,
    message_id,
    parse_time,
    received,
    text,
)  # fmt: skip
from sluice.envelope import RawBatch
from sluice.wire.halo import FIELD_CAPS, unit_of

EVENT_FIELDS = frozenset(("event_type", "element_selector", "page_url", "metadata", "timestamp"))
USER_FIELDS = frozenset(("user_id", "traits", "context", "user_token"))
COMPANY_FIELDS = frozenset(("company_id", "traits", "context", "user_id", "user_token"))


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    if batch.route.endswith("/users/identify"):
        yield from _identify(batch, "identify", USER_FIELDS)
    elif batch.route.endswith("/companies/identify"):
        yield from _identify(batch, "group", COMPANY_FIELDS)
    else:
        yield from _events(batch)


def _batch_field(batch: RawBatch, name: str) -> str:
    raw = batch.batch.get(name)
    value = JSON.decode(raw) if raw is not None else None
    return value if isinstance(value, str) else ""


def _base(batch: RawBatch, index: int, **fields: Any) -> CanonicalEvent:
    arrived = received(batch)
    return CanonicalEvent(
        org_id=batch.org_id, project_id=batch.project_id, env=batch.env,
        message_id=message_id(batch, index), family="halo", timestamp=arrived, received_at=arrived,
        **fields,
    )  # fmt: skip


def _events(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    user_id = _batch_field(batch, "user_id")
    session_id = _batch_field(batch, "session_id")[: FIELD_CAPS["session_id"]]
    unit_key = unit_of(user_id, session_id)
    arrived = received(batch)
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        fields = decode_object(payload)
        if isinstance(fields, str) or not isinstance(fields.get("event_type"), str):
            yield Invalid(index, fields if isinstance(fields, str) else "event_type is required", payload)
            continue
        metadata = fields.get("metadata")
        properties: dict[str, Any] = dict(metadata) if isinstance(metadata, dict) else {}
        if selector := fields.get("element_selector"):
            properties["element_selector"] = text(selector, FIELD_CAPS["element_selector"])
        properties.update(extras(fields, EVENT_FIELDS))
        event_type = text(fields["event_type"], FIELD_CAPS["event_type"])
        timestamp, original = event_time(parse_time(fields.get("timestamp")), arrived)
        yield CanonicalEvent(
            org_id=batch.org_id, project_id=batch.project_id, env=batch.env,
            message_id=message_id(batch, index), family="halo",
            type="page" if event_type == "page_view" else "track",
            event=event_type,
            user_id=user_id,
            unit_key=unit_key,
            session_id=session_id,
            timestamp=timestamp,
            original_timestamp=original,
            received_at=arrived,
            page_url=text(fields.get("page_url"), FIELD_CAPS["page_url"]),
            properties=as_json(properties),
        )  # fmt: skip


def _identify(batch: RawBatch, kind: str, known: frozenset[str]) -> Iterator[CanonicalEvent | Invalid]:
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        fields = decode_object(payload)
        if isinstance(fields, str):
            yield Invalid(index, fields, payload)
            continue
        traits = fields.get("traits") if isinstance(fields.get("traits"), dict) else {}
        # top-level extras (email, name…) are attributes of the user or company too
        traits = {**extras(fields, known), **(traits or {})}
        context = fields.get("context") if isinstance(fields.get("context"), dict) else None
        user_id = text(fields.get("user_id"))
        yield _base(
            batch, index,
            type=kind,
            event=kind,
            user_id=user_id,
            unit_key=user_id,
            group_id=text(fields.get("company_id")),
            traits=as_json(traits),
            context=as_json(context),
        )  # fmt: skip
