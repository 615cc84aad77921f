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
    policyId: str
    allocationName: str
    layerId: str | None = None
    bucket: int | None = None


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


def check_event(event: TrafficalEvent, org_id: str) -> str | None:
    if not event.unitKey:
        return "unitKey must not be empty"
    if event.orgId is not None and event.orgId != org_id:
        return "orgId does not match the API key's org"
    if isinstance(event, Track) and not event.event:
        return "event must not be empty"
    return None


body_decoder = msgspec.json.Decoder(EventsBody)
event_decoder: msgspec.json.Decoder[TrafficalEvent] = msgspec.json.Decoder(TrafficalEvent)
