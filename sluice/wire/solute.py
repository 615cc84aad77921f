"""Solute (Segment-style) ``POST /api/events``: ``{batch: [...], sentAt}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

MAX_EVENTS = 100

EventType = Literal["track", "identify", "page", "group", "alias"]


class SoluteBody(msgspec.Struct):
    batch: list[msgspec.Raw]
    sentAt: str | None = None


class SoluteEvent(msgspec.Struct, kw_only=True):
    """One event. The page marks ``messageId`` and ``context`` required; Sluice derives a
    deterministic id when ``messageId`` is missing and treats a missing context as empty, so
    hand-written integrations are not refused for what the pipeline can supply."""

    type: EventType
    timestamp: datetime
    messageId: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    context: dict[str, Any] = {}
    event: str | None = None
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    name: str | None = None
    category: str | None = None
    groupId: str | None = None
    previousId: str | None = None
    userToken: str | None = None
    """Sluice's addition: Halo's ``user_token``, proving ``userId`` where the org verifies
    identities (identify, group, alias). A credential: the gateway never forwards it."""


def unit_of(event: SoluteEvent) -> str:
    """The unit whose state the event touches (experiments, dedupe): its user, else its anonymous id."""
    return event.userId or event.anonymousId or ""


def named_users(event: SoluteEvent) -> list[str | None]:
    """The users whose traits, company membership or aliases the event changes."""
    if event.type in ("identify", "group"):
        return [event.userId]
    if event.type == "alias":
        return [event.userId, event.previousId]
    return []


def check(event: SoluteEvent) -> str | None:
    """Why a well-typed event is still invalid, or None."""
    if not (event.userId or event.anonymousId):
        return "userId or anonymousId is required"
    if event.type == "track" and not event.event:
        return "track events require 'event'"
    if event.type == "identify" and not event.userId:
        return "identify events require 'userId'"
    if event.type == "group" and not event.groupId:
        return "group events require 'groupId'"
    if event.type == "alias" and not (event.previousId and event.userId):
        return "alias events require 'previousId' and 'userId'"
    return None


body_decoder = msgspec.json.Decoder(SoluteBody)
event_decoder = msgspec.json.Decoder(SoluteEvent)
