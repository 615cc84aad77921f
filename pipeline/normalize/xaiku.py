"""Xaiku analytics events → canonical.

The family's unit is the session (``sessionId``): it has no user id. ``impression`` exposes the
session to ``experimentId``/``variantId`` (type ``exposure``); every other event is a ``track``.
Events carry no time of their own, so their timestamp is the gateway's receive time.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.canonical import CanonicalEvent
from pipeline.normalize.common import Invalid, as_json, decode_object, message_id, received, text
from sluice.envelope import RawBatch

OWN_COLUMNS = ("eventName", "experimentId", "variantId", "sessionId")


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    arrived = received(batch)
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        fields = decode_object(payload)
        if isinstance(fields, str):
            yield Invalid(index, fields, payload)
            continue
        name = text(fields.get("eventName"))
        session = text(fields.get("sessionId"), 200)
        if not (name and fields.get("experimentId") and session):
            yield Invalid(index, "eventName, experimentId and sessionId are required", payload)
            continue
        yield CanonicalEvent(
            org_id=batch.org_id, project_id=batch.project_id, env=batch.env,
            message_id=message_id(batch, index), family="xaiku",
            type="exposure" if name == "impression" else "track",
            event=name,
            unit_key=session,
            session_id=session,
            timestamp=arrived,
            received_at=arrived,
            properties=as_json({k: v for k, v in fields.items() if k not in OWN_COLUMNS}),
            experiment_id=text(fields.get("experimentId")),
            variant_id=text(fields.get("variantId")),
            page_url=text(fields.get("pathname"), 2000),
        )  # fmt: skip
