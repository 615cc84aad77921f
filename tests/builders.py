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


# --- Halo: the examples of halo-events.txt --------------------------------------------------

HALO_EXAMPLE: dict[str, Any] = {
    "user_id": "user_123",
    "session_id": "sess_abc123",
    "events": [
        {
            "event_type": "page_view",
            "page_url": "/settings/integrations",
            "metadata": {"referrer": "/dashboard"},
        },
        {
            "event_type": "click",
            "element_selector": "#connect-stripe-btn",
            "page_url": "/settings/integrations",
        },
    ],
}


def halo_events(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(HALO_EXAMPLE)
    if events:
        body["events"] = list(events)
    for name, value in fields.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def halo_user(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user_id": "user_123",
        "traits": {"email": "ada@example.com", "plan": "pro"},
        "context": {"locale": "en-GB"},
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def halo_company(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "company_id": "co_42",
        "traits": {"name": "Acme", "seats": 40},
        "context": {},
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


# --- Xaiku: the examples of xaiku-analytics.txt ---------------------------------------------

XAIKU_PUBLIC_KEY_EXAMPLE = "pk_dGhpcyBpcyBhIHRlc3Q"
XAIKU_CURL_EVENTS: list[dict[str, Any]] = [
    {
        "eventName": "impression",
        "experimentId": "exp_abc123",
        "variantId": "var_001",
        "sessionId": "sess_xyz",
        "pathname": "/landing",
        "referrer": "",
    },
    {
        "eventName": "click",
        "experimentId": "exp_abc123",
        "variantId": "var_001",
        "sessionId": "sess_xyz",
        "pathname": "/landing",
        "clickTarget": "#cta-button",
    },
]
XAIKU_FULL_EVENT: dict[str, Any] = {
    "eventName": "impression",
    "experimentId": "exp_abc123",
    "variantId": "var_001",
    "sessionId": "sess_xyz",
    "pathname": "/landing",
    "referrer": "https://google.com",
    "conversion": False,
    "loadTime": 1200,
    "scrollDepth": 75.5,
    "timeOnPage": 32000,
    "clickTarget": "#cta-button",
    "utm_source": "newsletter",
    "utm_medium": "email",
    "utm_campaign": "spring_sale",
    "test": False,
}


def xaiku_event(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(XAIKU_CURL_EVENTS[0])
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


# --- Traffical: the example of traffical-events.txt -----------------------------------------

TRAFFICAL_EXAMPLE: dict[str, Any] = {
    "events": [
        {
            "type": "exposure",
            "orgId": "org_acme",
            "projectId": "proj_marketplace",
            "env": "production",
            "unitKey": "user_789",
            "timestamp": "2026-05-21T10:30:00Z",
            "decisionId": "dec_abc123",
            "layers": [
                {
                    "layerId": "layer_checkout",
                    "policyId": "policy_color_test",
                    "allocationName": "treatment",
                    "bucket": 7420,
                }
            ],
        },
        {
            "type": "track",
            "orgId": "org_acme",
            "projectId": "proj_marketplace",
            "env": "production",
            "unitKey": "user_789",
            "timestamp": "2026-05-21T10:35:00Z",
            "event": "purchase",
            "properties": {"order_total": 49.99, "currency": "USD"},
            "decisionId": "dec_abc123",
        },
    ]
}


def traffical_event(index: int = 0, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(TRAFFICAL_EXAMPLE["events"][index])
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)
