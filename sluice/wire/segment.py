"""Segment's HTTP Tracking API (``/v1/track`` … ``/v1/batch``, the browser's ``/v1/t`` … ``/v1/b``).

A single call's body is one event (its type given by the route); a batch's is ``{batch: [...],
sentAt?, context?, integrations?, writeKey?}``, whose ``context`` and ``integrations`` apply to
every item (the item's own values win). Segment answers 200 to everything it can parse and drops
what it will not keep (no ``userId``/``anonymousId``, a track without ``event``): here those
events are dead letters with the reason, and the answer is 200 all the same.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sluice.wire.halo import NULL

CALL_LIMIT = 32 * 1024
"""Bytes of one call's body, and of each event of a batch (Segment's 32 KB)."""
BATCH_LIMIT = 500 * 1024
MAX_EVENTS = 2_500

EventType = Literal["track", "identify", "page", "screen", "group", "alias"]
CALLS: dict[str, EventType] = {
    "track": "track", "t": "track", "identify": "identify", "i": "identify", "page": "page", "p": "page",
    "screen": "screen", "s": "screen", "group": "group", "g": "group", "alias": "alias", "a": "alias",
}  # fmt: skip
"""The last segment of a single call's route → the type of its event."""
BATCHES = frozenset(("batch", "b", "import"))

Id = str | int
"""Segment's ids are strings; a number is taken as its decimal spelling (hand-written clients send them)."""

EXPERIMENT_VIEWED = "Experiment Viewed"
"""The spec's A/B testing event: ``experiment_id``/``experiment_name`` and ``variation_id``/
``variation_name`` in its properties make it an exposure."""


class SegmentBatch(msgspec.Struct, kw_only=True):
    batch: list[msgspec.Raw]
    sentAt: str | None = None
    writeKey: str | None = None
    context: msgspec.Raw = NULL
    """Forwarded as sent (the worker merges it into each item): checked to be an object or absent."""
    integrations: msgspec.Raw = NULL


class SegmentCall(msgspec.Struct, kw_only=True):
    """What the gateway reads of a single call's body beside the event itself."""

    writeKey: str | None = None
    sentAt: str | None = None


class SegmentEvent(msgspec.Struct, kw_only=True):
    """One event, as the spec's common fields and each call's own. ``type`` may be absent from a
    single call (the route says it)."""

    type: EventType | None = None
    messageId: str | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | None = None
    receivedAt: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    event: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    name: str | None = None
    category: str | None = None
    groupId: Id | None = None
    previousId: Id | None = None
    writeKey: str | None = None
    version: Any = None
    channel: str | None = None


def text_id(value: Id | None) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def unit_of(event: SegmentEvent) -> str:
    """The unit whose state the event touches: its user, else its anonymous id."""
    return text_id(event.userId) or text_id(event.anonymousId)


def named_users(event: SegmentEvent, kind: EventType) -> list[str | None]:
    """The users whose traits, company membership or aliases the event changes."""
    if kind in ("identify", "group"):
        return [text_id(event.userId)]
    if kind == "alias":
        return [text_id(event.userId), text_id(event.previousId)]
    return []


def check(event: SegmentEvent, kind: EventType | None) -> str | None:
    """Why Segment would not keep the event (it still answers 200), or None."""
    if kind is None:
        return "type is required in a batch (track, identify, page, screen, group or alias)"
    if not (text_id(event.userId) or text_id(event.anonymousId)):
        return "userId or anonymousId is required"
    if kind == "track" and not event.event:
        return "track events require 'event'"
    if kind == "group" and not text_id(event.groupId):
        return "group events require 'groupId'"
    if kind == "alias" and not (text_id(event.previousId) and text_id(event.userId)):
        return "alias events require 'previousId' and 'userId'"
    return None


def kind_of(route: str, event: SegmentEvent) -> EventType | None:
    """The event's type: a single call's route decides; a batch item says its own."""
    return CALLS.get(route.rstrip("/").rsplit("/", 1)[-1]) or event.type


batch_decoder = msgspec.json.Decoder(SegmentBatch)
call_decoder = msgspec.json.Decoder(SegmentCall)
event_decoder = msgspec.json.Decoder(SegmentEvent)
