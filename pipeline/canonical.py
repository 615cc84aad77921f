"""The canonical event: what every family's events become, one row of the ``events`` table."""

from __future__ import annotations

from datetime import datetime

import msgspec


class CanonicalEvent(msgspec.Struct, kw_only=True, gc=False):
    """``gc=False`` (here and on the other per-event structs: rows, routed items, raw batches):
    it refers to nothing that could refer back to it, so it can be in no reference cycle and the
    cyclic collector need not track the millions a worker makes."""

    org_id: str
    project_id: str
    env: str
    message_id: str
    family: str
    type: str
    event: str = ""
    user_id: str = ""
    anonymous_id: str = ""
    unit_key: str = ""
    session_id: str = ""
    timestamp: datetime
    received_at: datetime
    sent_at: datetime | None = None
    original_timestamp: str = ""
    """The client's time as sent, when it was outside the trusted window and ``timestamp`` is the
    received time instead (see ``pipeline.normalize.common.PAST_WINDOW``)."""
    properties: msgspec.Raw = msgspec.Raw(b"{}")
    value: float = 0.0
    """A track's value as the worker counts it (``pipeline.processor``); 0 for other types."""
    context: msgspec.Raw = msgspec.Raw(b"{}")
    traits: msgspec.Raw = msgspec.Raw(b"{}")
    experiment_id: str = ""
    variant_id: str = ""
    post_exposure: list[str] = []
    """The experiments (first ``pipeline.processor.MAX_POST_EXPOSURE``) whose first exposure of the unit a track came
    at or after, as the worker knew it (the CUPED covariate's scan skips those tracks)."""
    decision_id: str = ""
    page_url: str = ""
    group_id: str = ""
    previous_id: str = ""
    flags: list[str] = []
    """Things an analyst should know, e.g. ``future_timestamp``."""


class Invalid(msgspec.Struct, gc=False):
    """An event that could not become a canonical event: its index in the request, why, and its
    bytes (a dead letter's content)."""

    index: int
    reason: str
    payload: msgspec.Raw


def to_rows(events: list[CanonicalEvent]) -> bytes:
    """JSONEachRow bytes for the ``events`` table: the structs as they are, the JSON columns as
    objects, which the warehouse stores as their text (``input_format_json_read_objects_as_strings``)."""
    return _row_encoder.encode(events)


_row_encoder = msgspec.json.Encoder()
