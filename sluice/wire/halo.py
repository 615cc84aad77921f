"""Halo (``/api/sdk/…``): behavioural events, user identify, company identify.

All-or-nothing family: one invalid event fails the request (400) and nothing of it is kept.
``user_token`` is a credential: the gateway verifies it and never forwards it to Kafka.
"""

from __future__ import annotations

import msgspec

MAX_EVENTS = 100
MAX_METADATA_BYTES = 10_000
MAX_USER_PAYLOAD_BYTES = 20_000
MAX_COMPANY_PAYLOAD_BYTES = 50_000
# Sanitized by cutting (the page: "Field lengths are sanitized"), never a reason to refuse.
FIELD_CAPS = {"event_type": 100, "element_selector": 500, "page_url": 2_000, "session_id": 200}


NULL = msgspec.Raw(b"null")
"""An absent or null JSON value (msgspec cannot decode ``Raw | None``)."""


def unit_of(user_id: str | None, session_id: str | None) -> str:
    """The unit of a request's events (one per request): its user, else its session."""
    return user_id or (session_id or "")[: FIELD_CAPS["session_id"]]


class EventsBody(msgspec.Struct, kw_only=True):
    events: list[msgspec.Raw]
    user_id: str | None = None
    session_id: str | None = None
    user_token: str | None = None


class HaloEvent(msgspec.Struct, kw_only=True):
    event_type: str
    element_selector: str | None = None
    page_url: str | None = None
    metadata: msgspec.Raw = NULL
    timestamp: str | None = None


class UserIdentifyBody(msgspec.Struct, kw_only=True):
    user_id: str
    traits: msgspec.Raw = NULL
    context: msgspec.Raw = NULL
    user_token: str | None = None


class CompanyIdentifyBody(msgspec.Struct, kw_only=True):
    company_id: str
    traits: msgspec.Raw = NULL
    context: msgspec.Raw = NULL
    user_id: str | None = None
    user_token: str | None = None


def is_object(raw: msgspec.Raw) -> bool:
    """An object, or absent/null."""
    first = bytes(memoryview(raw)[:1])
    return first == b"{" or bytes(raw) == b"null"


def check_event(event: HaloEvent) -> str | None:
    if not event.event_type:
        return "event_type is required"
    if not is_object(event.metadata):
        return "metadata must be an object"
    if len(event.metadata) > MAX_METADATA_BYTES:
        return f"metadata exceeds {MAX_METADATA_BYTES} bytes"
    return None


def payload_size(*parts: msgspec.Raw) -> int:
    return sum(len(p) for p in parts if bytes(p) != b"null")


events_decoder = msgspec.json.Decoder(EventsBody)
event_decoder = msgspec.json.Decoder(HaloEvent)
user_decoder = msgspec.json.Decoder(UserIdentifyBody)
company_decoder = msgspec.json.Decoder(CompanyIdentifyBody)
