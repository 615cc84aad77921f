"""Traffical ``POST /v1/events`` (and ``/v1/events/batch``): exposure, track, decision events.

Partial success: ``accepted`` counts valid events; invalid ones go to the dead-letter topic.
Real SDKs send more than the page lists (``id``, ``assignments``, ``value``, ``attribution``…):
unknown fields are kept by the worker, never refused here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

MAX_EVENTS = 1000
EVENTS_MESSAGE = f"events must be a non-empty array (max {MAX_EVENTS})"


class EventsBody(msgspec.Struct):
    events: list[msgspec.Raw]


class Layer(msgspec.Struct, kw_only=True):
    """One layer's resolution. The published schema requires only ``layerId`` and ``bucket``: a
    unit whose bucket falls in no allocation is sent as ``{"layerId", "bucket"}`` and is assigned
    nothing in that layer — its decision and its other layers still count. Nothing here is
    required, so older senders that omit ``layerId`` are not refused either."""

    layerId: str | None = None
    bucket: int | None = None
    policyId: str | None = None
    allocationName: str | None = None
    attributionOnly: bool | None = None
    """js-client: resolved for attribution only (the page asked for none of its parameters)."""

    @property
    def allocated(self) -> bool:
        return bool(self.policyId and self.allocationName)


class _Common(msgspec.Struct, kw_only=True, tag_field="type"):
    unitKey: str
    timestamp: datetime
    id: str | None = None
    orgId: str | None = None
    projectId: str | None = None
    env: str | None = None
    decisionId: str | None = None
    userId: str | None = None
    sessionId: str | None = None
    anonymousId: str | None = None
    sdkName: str | None = None
    sdkVersion: str | None = None


class Exposure(_Common, tag="exposure", kw_only=True):
    layers: list[Layer]


class Decision(_Common, tag="decision", kw_only=True):
    layers: list[Layer]
    latencyMs: float | None = None


class Track(_Common, tag="track", kw_only=True):
    event: str
    properties: dict[str, Any] = {}
    value: float | None = None
    attribution: list[dict[str, Any]] | None = None


TrafficalEvent = Exposure | Decision | Track


def unit_of(event: TrafficalEvent) -> str:
    """The unit whose state the event touches: its ``unitKey``."""
    return event.unitKey


def check_event(event: TrafficalEvent) -> str | None:
    """Why the event is invalid, or None. A body ``orgId``/``projectId``/``env`` is never checked
    against the key: the key decides the tenant, the body's values are kept in ``context``."""
    if not event.unitKey:
        return "unitKey must not be empty"
    if isinstance(event, Track) and not event.event:
        return "event must not be empty"
    return None


body_decoder = msgspec.json.Decoder(EventsBody)
event_decoder: msgspec.json.Decoder[TrafficalEvent] = msgspec.json.Decoder(TrafficalEvent)
