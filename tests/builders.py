"""Payload builders, one per SDK family: tests say what differs, the builder the rest."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

SOLUTE_EXAMPLE_EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Button Clicked",
    "properties": {"button_id": "cta-signup", "page": "/homepage"},
    "timestamp": "2025-01-15T10:30:00Z",
    "userId": "user_123",
    "anonymousId": "anon_456",
    "messageId": "msg_789",
    "context": {
        "page": {"path": "/homepage", "url": "https://example.com/homepage", "title": "Homepage"},
        "library": {"name": "@solute-ai/sdk", "version": "0.1.2"},
        "sessionId": "session_abc",
    },
}


def solute_event(**changes: Any) -> dict[str, Any]:
    """The reference page's example event; ``field=None`` removes a field."""
    event = copy.deepcopy(SOLUTE_EXAMPLE_EVENT)
    for name, value in changes.items():
        if value is None:
            event.pop(name, None)
        else:
            event[name] = value
    return event


def solute_body(*events: dict[str, Any], sent_at: str | None = "2025-01-15T10:30:05Z") -> bytes:
    body: dict[str, Any] = {"batch": list(events) or [solute_event()]}
    if sent_at is not None:
        body["sentAt"] = sent_at
    return msgspec.json.encode(body)
