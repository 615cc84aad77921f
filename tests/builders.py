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
    return _changed(SOLUTE_EXAMPLE_EVENT, changes)


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


def xaiku_sdk_event(**changes: Any) -> dict[str, Any]:
    """An event as the browser SDK (1.1.1) builds it: its client attributes (framework, sessionId =
    the guid, ``userId`` and ``orgId``, ``''`` until set), the page, the metric, the name."""
    event: dict[str, Any] = {
        "framework": "react", "frameworkVersion": "19.0.0", "sessionId": "3f6c1a2e-guid", "userId": "user_42",
        "orgId": "", "pathname": "/landing", "referrer": "", "experimentId": "exp_abc123", "variantId": "var_001",
        "eventName": "impression",
    }  # fmt: skip
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


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


# --- Traffical: every shape the published event schema allows (sluice/schemas/traffical) ------

TRAFFICAL_BASE: dict[str, Any] = {
    "orgId": "org_acme", "projectId": "proj_marketplace", "env": "production", "unitKey": "user-abc",
    "timestamp": "2026-05-21T10:30:00.000Z",
}  # fmt: skip
ALLOCATED_LAYER = {
    "layerId": "layer_ui", "bucket": 551, "policyId": "policy_color_test", "policyKey": "color-test",
    "allocationName": "treatment", "allocationKey": "treatment",
}  # fmt: skip
UNALLOCATED_LAYER = {"layerId": "layer_pricing", "bucket": 913}
"""A unit whose bucket falls in no allocation: the schema's minimal layer (js-client sends it)."""


def traffical_schema_events() -> dict[str, dict[str, Any]]:
    """Named events, each valid against the published schema, from the minimal to the fullest."""
    base = copy.deepcopy(TRAFFICAL_BASE)
    return {
        "exposure-minimal": {**base, "type": "exposure", "assignments": {}, "layers": [UNALLOCATED_LAYER]},
        "exposure-unallocated-first": {
            **base,
            "type": "exposure",
            "id": "exp_1",
            "decisionId": "dec_1",
            "assignments": {"ui.primaryColor": "#FF0000", "pricing.discount": 0},
            "layers": [UNALLOCATED_LAYER, ALLOCATED_LAYER],
            "context": {"userId": "user-abc", "locale": "en"},
            "sdkName": "js-client",
            "sdkVersion": "0.17.0",
        },
        "exposure-no-layers": {**base, "type": "exposure", "assignments": {}, "layers": []},
        "decision-unallocated-only": {
            **base,
            "type": "decision",
            "assignments": {"pricing.discount": 0},
            "layers": [UNALLOCATED_LAYER],
        },
        "decision-full": {
            **base,
            "type": "decision",
            "id": "dec_1",
            "userId": "u_1",
            "anonymousId": "anon_1",
            "sessionId": "s_1",
            "requestId": "req_1",
            "requestedParameters": ["ui.primaryColor", "pricing.discount"],
            "assignments": {"ui.primaryColor": "#FF0000", "pricing.discount": 0},
            "layers": [ALLOCATED_LAYER, UNALLOCATED_LAYER],
            "latencyMs": 3,
            "context": {"userId": "user-abc"},
            "sdkName": "js-client",
            "sdkVersion": "0.17.0",
        },
        "track-minimal": {**base, "type": "track", "event": "purchase"},
        "track-full": {
            **base,
            "type": "track",
            "id": "trk_1",
            "event": "purchase",
            "decisionId": "dec_1",
            "value": 49.99,
            "values": {"margin": 12.5},
            "properties": {"orderId": "ord_1", "value": 49.99},
            "attribution": [
                {
                    "layerId": "layer_ui",
                    "policyId": "policy_color_test",
                    "policyKey": "color-test",
                    "allocationName": "treatment",
                    "allocationKey": "treatment",
                    "weight": 1,
                    "model": "last_touch",
                }
            ],
            "eventTimestamp": "2026-05-21T10:29:00Z",
            "sdkName": "js-client",
            "sdkVersion": "0.17.0",
        },
    }


# --- Configuration the SDKs fetch: Traffical's example bundle, Xaiku experiments -------------


def traffical_bundle(**changes: Any) -> dict[str, Any]:
    """The sdk-spec's example bundle (project ``proj_test``, env ``production``)."""
    from importlib import resources

    text = resources.files("sluice.schemas").joinpath("traffical/bundle_basic.json").read_text()
    bundle: dict[str, Any] = msgspec.json.decode(text)
    bundle.update(changes)
    return {k: v for k, v in bundle.items() if v is not None}


XAIKU_EXPERIMENTS: dict[str, Any] = {
    "experiments": {
        "exp_hero": [
            {"id": "control", "control": True, "parts": {"title": "Welcome", "cta": "Sign up"}},
            {"id": "bold", "weight": 5, "parts": {"title": "WELCOME!", "cta": "Start now"}},
        ],
        "exp_cta": [{"id": "a"}, {"id": "b", "weight": 2.5}],
        "exp_other": [{"id": "only", "name": "extra fields are served too"}],
    }
}


def traffical_sdk_batch(unit: str = "user-abc") -> dict[str, Any]:
    """What js-client 0.17 posts for one page of the sdk-spec example bundle: the decision (every
    layer: layer_ui in treatment, layer_pricing's bucket 913 in no allocation), the exposure
    (``trackExposure``: every layer again) and a track attributed to what the unit saw."""
    scope = {"orgId": "org_test", "projectId": "proj_test", "env": "production", "unitKey": unit}
    sdk = {"sdkName": "js-client", "sdkVersion": "0.17.0"}
    layers = [
        {"layerId": "layer_ui", "bucket": 551, "policyId": "policy_color_test", "allocationName": "treatment"},
        {"layerId": "layer_pricing", "bucket": 913},
    ]
    assignments = {"ui.primaryColor": "#FF0000", "ui.buttonText": "Click Me", "pricing.discount": 0}
    return {
        "events": [
            {"type": "decision", "id": "dec_1", **scope, "timestamp": "2026-05-21T10:30:00.000Z",
             "assignments": assignments, "layers": layers, **sdk},
            {"type": "exposure", "id": "exp_1", "decisionId": "dec_1", **scope,
             "timestamp": "2026-05-21T10:30:00.100Z", "assignments": assignments, "layers": layers, **sdk},
            {"type": "track", "id": "trk_1", **scope, "timestamp": "2026-05-21T10:31:00.000Z", "event": "purchase",
             "value": 49.99, "properties": {"value": 49.99, "orderId": "ord_1"},
             "attribution": [{"layerId": "layer_ui", "policyId": "policy_color_test", "allocationName": "treatment"}],
             **sdk},
        ]
    }  # fmt: skip


# --- Segment: the HTTP Tracking API's track example, as analytics-python 2.4 sends it --------

SEGMENT_EXAMPLE_EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user_123",
    "anonymousId": "anon_456",
    "properties": {"revenue": 39.95, "shipping": "2-day"},
    "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    "timestamp": "2025-01-15T10:30:00+00:00",
    "messageId": "seg-msg-1",
    "integrations": {},
}


def segment_event(**changes: Any) -> dict[str, Any]:
    """The example event; ``field=None`` removes a field."""
    return _changed(SEGMENT_EXAMPLE_EVENT, changes)


def segment_batch(*events: dict[str, Any], **fields: Any) -> bytes:
    """A ``/v1/batch`` body (``sentAt`` five seconds after the example's time unless given)."""
    body: dict[str, Any] = {"batch": list(events) or [segment_event()], "sentAt": "2025-01-15T10:30:05+00:00"}
    body.update(fields)
    return msgspec.json.encode({k: v for k, v in body.items() if v is not None})


# --- PostHog: capture events as posthog-python 7 sends them ---------------------------------

POSTHOG_EXAMPLE_EVENT: dict[str, Any] = {
    "event": "purchase",
    "distinct_id": "user_123",
    "properties": {"amount": 20, "$lib": "posthog-python", "$lib_version": "7.91.1"},
    "timestamp": "2025-01-15T10:30:00+00:00",
    "uuid": "0194690b-7c00-7000-8000-000000000001",
    "type": "capture",
}


def posthog_event(**changes: Any) -> dict[str, Any]:
    """The example event; ``field=None`` removes a field."""
    return _changed(POSTHOG_EXAMPLE_EVENT, changes)


def posthog_batch(*events: dict[str, Any], api_key: str | None = None, **fields: Any) -> bytes:
    """A ``/batch/`` body: ``{api_key, batch, sent_at}`` (sent five seconds after the example)."""
    body: dict[str, Any] = {"batch": list(events) or [posthog_event()], "sent_at": "2025-01-15T10:30:05+00:00"}
    if api_key is not None:
        body["api_key"] = api_key
    body.update(fields)
    return msgspec.json.encode(body)


def _changed(example: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``example`` with ``changes``; ``field=None`` removes a field."""
    event = copy.deepcopy(example)
    for name, value in changes.items():
        if value is None:
            event.pop(name, None)
        else:
            event[name] = value
    return event
