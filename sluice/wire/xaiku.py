"""Xaiku ``POST /api/v1/analytics``: ``{events: [...]}``, or the sendBeacon form with ``pkey``.

All-or-nothing family. The sendBeacon body arrives with any content type (``text/plain`` from
a string beacon) and no custom headers, so the key may be in the body; it is never forwarded.
Value ranges (scrollDepth 0–100, times ≥ 0) are not enforced: browsers send odd numbers, and in
an all-or-nothing family one odd number would cost the whole batch.
"""

from __future__ import annotations

from typing import Any

import msgspec

MAX_EVENTS = 1000
"""Events per request. The page gives none; the SDK flushes every 5 events or 5 s and sends what
is left on unload, so a real batch is a handful. The cap is Traffical's (the largest of the other
families'): without one a 1 MiB body carried 18,590 events while the rate limit counts requests."""


class AnalyticsBody(msgspec.Struct, kw_only=True):
    events: list[msgspec.Raw]
    pkey: str | None = None


class XaikuEvent(msgspec.Struct, kw_only=True):
    eventName: str
    experimentId: str
    sessionId: str
    variantId: str | None = None
    conversion: bool | None = None
    loadTime: float | None = None
    scrollDepth: float | None = None
    timeOnPage: float | None = None
    clickTarget: str | None = None
    pathname: str | None = None
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    test: bool | None = None
    # The browser SDK's attributes, typed loosely: a page may set them to anything, and one odd
    # value must not cost an all-or-nothing batch.
    userId: Any = None
    """The page's user id (``''`` until it sets one)."""
    orgId: Any = None
    """The SDK's ``orgId`` option, as sent; the key decides the org."""


SESSION_ID_MAX = 200


def unit_of(event: XaikuEvent) -> str:
    """The unit whose state the event touches: its session (as the normalizer cuts it)."""
    return event.sessionId[:SESSION_ID_MAX]


def check_event(event: XaikuEvent) -> str | None:
    for name in ("eventName", "experimentId", "sessionId"):
        if not getattr(event, name):
            return f"{name} must not be empty"
    return None


body_decoder = msgspec.json.Decoder(AnalyticsBody)
event_decoder = msgspec.json.Decoder(XaikuEvent)
