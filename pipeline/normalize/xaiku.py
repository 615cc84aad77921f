"""Xaiku analytics events → canonical.

The family's unit is the session (``sessionId``, the SDK's guid: it buckets variants by it), also
when the page has set a ``userId`` (that becomes ``user_id``; the SDK sends ``''`` until then).
``impression`` exposes the session to ``experimentId``/``variantId`` (type ``exposure``); every
other event is a ``track``. Events carry no time of their own, so their timestamp is the
gateway's receive time. The SDK's ``orgId`` option is kept in ``context`` as sent: the key
decides the org.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize.common import as_json, decode_object, message_id, received, text
from sluice.envelope import RawBatch

OWN_COLUMNS = ("eventName", "experimentId", "variantId", "sessionId", "userId")
CONTEXT_FIELDS = ("orgId",)


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
            user_id=text(fields.get("userId")),
            unit_key=session,
            session_id=session,
            timestamp=arrived,
            received_at=arrived,
            properties=as_json({k: v for k, v in fields.items() if k not in OWN_COLUMNS + CONTEXT_FIELDS}),
            context=as_json({k: fields[k] for k in CONTEXT_FIELDS if k in fields}),
            experiment_id=text(fields.get("experimentId")),
            variant_id=text(fields.get("variantId")),
            page_url=text(fields.get("pathname"), 2000),
        )  # fmt: skip
