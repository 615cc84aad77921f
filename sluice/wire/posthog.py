"""PostHog's capture API (``/batch``, ``/e``, ``/i/v0/e``, ``/capture``, ``/track``, ``/engage``).

A body (once decoded: ``services.gateway.posthog_body``) is an array of events, ``{api_key |
token, batch: [...], sent_at?, historical_migration?}``, or one event. The project token is the
batch's, else each event's ``token``, ``$token``, ``api_key`` or ``properties.token`` (all the
same). ``distinct_id`` is read where PostHog reads it — ``distinct_id``, ``$distinct_id``,
``properties.distinct_id`` — as a string (a number in its decimal spelling), cut to 200
characters. A ``/engage`` body is an old-style person update: ``$identify`` with its ``$set``.
"""

from __future__ import annotations

from typing import Any

import msgspec

MAX_DISTINCT_ID = 200
PERSONAL_KEY_PREFIX = "phx_"
"""PostHog's personal API keys: never a project token, refused with 401."""
ENGAGE = "$identify"


class CaptureBody(msgspec.Struct, kw_only=True):
    """The object form of a body: a batch, or one event (``batch`` absent)."""

    batch: list[msgspec.Raw] | None = None
    api_key: str | None = None
    token: str | None = None
    sent_at: str | None = None
    historical_migration: bool | None = None


class PostHogEvent(msgspec.Struct, kw_only=True):
    event: str | None = None
    distinct_id: Any = None
    dollar_distinct_id: Any = msgspec.field(default=None, name="$distinct_id")
    properties: dict[str, Any] | None = None
    uuid: str | None = None
    timestamp: str | None = None
    offset: int | float | None = None
    token: str | None = None
    dollar_token: str | None = msgspec.field(default=None, name="$token")
    api_key: str | None = None
    dollar_set: dict[str, Any] | None = msgspec.field(default=None, name="$set")
    """An ``/engage`` body's person properties."""


def as_text(value: Any) -> str:
    """A distinct id as PostHog keeps it: a string as it is, anything else in its JSON spelling."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return msgspec.json.encode(value).decode()


def distinct_id(event: PostHogEvent) -> str:
    value = event.distinct_id
    if value is None:
        value = event.dollar_distinct_id
    if value is None and event.properties is not None:
        value = event.properties.get("distinct_id")
    return as_text(value)[:MAX_DISTINCT_ID]


def token_of(event: PostHogEvent) -> str | None:
    token = event.token or event.dollar_token or event.api_key
    if token is None and event.properties is not None:
        value = event.properties.get("token")
        token = value if isinstance(value, str) else None
    return token or None


def name_of(event: PostHogEvent, route: str) -> str:
    if event.event:
        return event.event
    return ENGAGE if route.rstrip("/").endswith("/engage") else ""


def check(event: PostHogEvent, route: str) -> str | None:
    """Why PostHog's capture would refuse the event (a 400 for the whole request), or None."""
    if not name_of(event, route):
        return "event name is required"
    if not distinct_id(event):
        return "distinct_id is required"
    return None


PERSON_EVENTS = frozenset(("$identify", "$set", "$set_once", "$create_alias"))
"""Events that change a person (``$groupidentify`` changes a group, not a person)."""


def named_users(event: PostHogEvent, route: str) -> list[str | None]:
    """The users an event changes (for identity verification)."""
    name = name_of(event, route)
    if name not in PERSON_EVENTS:
        return []
    users: list[str | None] = [distinct_id(event)]
    properties = event.properties or {}
    if name == "$create_alias" and properties.get("alias") is not None:
        users.append(as_text(properties["alias"]))
    return users


body_decoder = msgspec.json.Decoder(list[msgspec.Raw] | CaptureBody)
event_decoder = msgspec.json.Decoder(PostHogEvent)
