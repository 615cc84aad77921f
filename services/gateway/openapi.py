"""The OpenAPI 3 document at ``/openapi.json``, built from the wire structs themselves.

Event schemas come from msgspec (``schema_components``), so the document cannot drift from what
the decoders accept; envelopes and responses are written here, once per family.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from services.gateway.routes import ROUTES
from sluice.configs import Variant
from sluice.wire import halo, segment, solute, traffical, xaiku

REF = "#/components/schemas/{name}"
JsonSchema = dict[str, Any]

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
TRAFFICAL_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
SUCCESS = {
    "type": "object",
    "required": ["success"],
    "properties": {"success": {"type": "boolean", "const": True}},
}
SOLUTE_REPORT = {
    "type": "object",
    "required": ["success", "processed", "failed"],
    "properties": {
        "success": {"type": "boolean"},
        "processed": {"type": "integer", "minimum": 0},
        "failed": {"type": "integer", "minimum": 0},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "error"],
                "properties": {"index": {"type": "integer"}, "error": {"type": "string"}},
            },
        },
    },
}
TRAFFICAL_RESULT = {
    "type": "object",
    "required": ["accepted", "written"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "written": {"type": "integer", "minimum": 0},
    },
}
OBJECT = {"type": "object", "additionalProperties": True}


def _ref(name: str) -> JsonSchema:
    return {"$ref": REF.format(name=name)}


def _events(item: JsonSchema, max_items: int | None) -> JsonSchema:
    schema: JsonSchema = {"type": "array", "items": item, "minItems": 1}
    if max_items:
        schema["maxItems"] = max_items
    return schema


def _envelope(required: list[str], **properties: JsonSchema) -> JsonSchema:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": True}


def _operation(
    summary: str, security: str, body: JsonSchema, success: JsonSchema, error: JsonSchema,
    extra_errors: dict[str, JsonSchema] | None = None, content_types: tuple[str, ...] = ("application/json",),
) -> JsonSchema:  # fmt: skip
    def answer(description: str, schema: JsonSchema) -> JsonSchema:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    responses = {
        "200": answer("Accepted: durable in Kafka", success),
        "400": answer("Invalid request", error),
        "401": answer("Missing, invalid, revoked or expired key; wrong kind or scope", error),
        "413": answer("Body too large", error),
        "429": answer("Over the key's rate; see Retry-After", error),
        "503": answer("Not made durable, or too many bytes in flight; retry after Retry-After", error),
    }
    responses.update({code: answer("See the family's reference", s) for code, s in (extra_errors or {}).items()})
    operation: JsonSchema = {
        "summary": summary,
        "requestBody": {"required": True, "content": {ct: {"schema": body} for ct in content_types}},
        "responses": responses,
    }
    if security:
        operation["security"] = [{security: []}]
    return {"post": operation}


def _header(name: str, description: str) -> JsonSchema:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}


def _fetch(
    summary: str, security: str, parameters: list[JsonSchema], success: JsonSchema, error: JsonSchema
) -> JsonSchema:
    """A GET the SDKs make for their configuration: conditional, with the family's errors."""

    def answer(description: str, schema: JsonSchema) -> JsonSchema:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    cached = {"ETag": {"schema": {"type": "string"}}, "Cache-Control": {"schema": {"type": "string"}}}
    return {
        "get": {
            "summary": summary,
            "security": [{security: []}],
            "parameters": [*parameters, _header("If-None-Match", "an ETag from an earlier answer")],
            "responses": {
                "200": {**answer("The configuration", success), "headers": cached},
                "304": {"description": "Unchanged since the ETag in If-None-Match", "headers": cached},
                "400": {"description": "A request HTTP itself refuses (e.g. a header with control characters)"},
                "401": answer("Missing, invalid, revoked or expired key; wrong kind", error),
                "404": answer("Nothing loaded for this org (and project and env)", error),
                "429": answer("Over the key's rate; see Retry-After", error),
            },
        }
    }


def _config_operations() -> dict[str, JsonSchema]:
    bundle = {**OBJECT, "description": "A Traffical config bundle (sdk-spec config-bundle.schema.json)"}
    experiments = {
        "type": "object",
        "required": ["experiments"],
        "properties": {
            "experiments": {"type": "object", "additionalProperties": {"type": "array", "items": _ref("Variant")}}
        },
    }
    return {
        "traffical.config": _fetch(
            "Traffical config bundle (loaded with `sluice config put`)", "bearer",
            [{"name": "projectId", "in": "path", "required": True, "schema": {"type": "string"}},
             {"name": "env", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "default: the key's env"}],
            bundle, TRAFFICAL_ERROR,
        ),
        "xaiku.experiments": _fetch(
            "Xaiku experiments (loaded with `sluice experiments put`)", "publicKey",
            [_header("X-experiment-ids", "comma-separated ids; empty: all of the org's"),
             _header("X-xaiku-test", "`true` in the SDK's test mode: the answer is not cached")],
            experiments, ERROR,
        ),
    }  # fmt: skip


def _segment_operations() -> JsonSchema:
    """Segment's HTTP Tracking API: 200 to whatever parses (an event Segment would drop is a dead
    letter), 400 for a body that does not parse or is too large; the write key as Basic's user
    name or ``writeKey`` in the body."""
    batch = _envelope(
        ["batch"], batch=_events(_ref("SegmentEvent"), segment.MAX_EVENTS) | {"minItems": 0},
        sentAt={"type": "string"}, writeKey={"type": "string"}, context=OBJECT, integrations=OBJECT,
    )  # fmt: skip
    plain = ("application/json", "text/plain")
    return {
        "segment.call": _operation(
            "One call of Segment's HTTP Tracking API (the route names its type)",
            "basic",
            _ref("SegmentEvent"),
            SUCCESS,
            ERROR,
            {"403": ERROR},
            plain,
        ),
        "segment.batch": _operation(
            "A batch of Segment calls (≤2,500 events, 500 KB)", "basic", batch, SUCCESS, ERROR, {"403": ERROR}, plain
        ),
    }


SCRIPT = {"schema": {"type": "string"}}


def _posthog_operations() -> JsonSchema:
    """PostHog's capture: the token in the body (``api_key``/``token``, or each event's); the body
    JSON, gzip (sniffed), base64 or lz-string, or a ``data`` form field; a GET carries ``data``."""
    answer = {"status": {"const": 1}}
    ok = {
        "description": "Accepted: durable in Kafka",
        "content": {"application/json": {"schema": {"type": "object", "required": ["status"], "properties": answer}}},
    }
    event = {
        "type": "object",
        "required": ["event"],
        "additionalProperties": True,
        "properties": {
            "event": {"type": "string"},
            "distinct_id": {},
            "properties": OBJECT,
            "uuid": {"type": "string"},
            "timestamp": {"type": "string"},
        },
    }
    body = {
        "oneOf": [
            _envelope(
                ["batch"],
                batch={"type": "array", "items": event},
                api_key={"type": "string"},
                token={"type": "string"},
                sent_at={"type": "string"},
                historical_migration={"type": "boolean"},
            ),
            {"type": "array", "items": event, "minItems": 1},
            event,
        ]
    }
    errors = {
        code: {"description": why, "content": {"application/json": {"schema": ERROR}}}
        for code, why in (
            ("400", "Undecodable, or an event without a name or distinct_id"),
            ("401", "Missing or unknown token"),
            ("403", "A person change refused by identity verification"),
            ("413", "Body too large"),
            ("429", "Over the key's rate; see Retry-After"),
            ("503", "Not made durable; retry after Retry-After"),
        )
    }
    query = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": why}
        for name, why in (
            ("compression", "gzip, gzip-js, lz64, base64"),
            ("data", "the payload (GET)"),
            ("beacon", "1: answer 204"),
            ("_", "the client's time in ms"),
            ("ver", "SDK version"),
        )
    ]
    capture = {"parameters": query, "responses": {"200": ok, "204": {"description": "Accepted (beacon=1)"}, **errors}}
    content = {ct: {"schema": body} for ct in ("application/json", "text/plain")}
    flags = {"description": "No feature flags", "content": {"application/json": {"schema": OBJECT}}}
    return {
        "posthog.capture": {
            "post": {"summary": "PostHog capture", "requestBody": {"required": False, "content": content}, **capture},
            "get": {"summary": "PostHog capture (data= in the query)", **capture},
        },
        "posthog.flags": {
            "post": {"summary": "posthog-js start-up: feature flags (none)", "responses": {"200": flags}},
            "get": {"summary": "posthog-js start-up: feature flags (none)", "responses": {"200": flags}},
        },
        "posthog.config_js": {
            "get": {
                "summary": "posthog-js start-up: the same configuration as a script",
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "A script", "content": {"application/javascript": SCRIPT}}},
            }
        },
        "posthog.config": {"get": {
            "summary": "posthog-js start-up: the project's remote configuration (nothing on)",
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": flags},
        }},
    }  # fmt: skip


@functools.cache
def openapi_document() -> JsonSchema:
    _, components = msgspec.json.schema_components(
        [xaiku.XaikuEvent, solute.SoluteEvent, traffical.Exposure,
         traffical.Decision, traffical.Track, Variant, segment.SegmentEvent],
        ref_template=REF,
    )  # fmt: skip
    # by hand: HaloEvent's Raw fields have defaults msgspec cannot put in a schema
    components["HaloEvent"] = {
        "type": "object",
        "required": ["event_type"],
        "properties": {
            "event_type": {"type": "string"},
            "element_selector": {"type": "string"},
            "page_url": {"type": "string"},
            "metadata": OBJECT,
            "timestamp": {"type": "string"},
        },
        "additionalProperties": True,
    }
    halo_events = _envelope(
        ["events"], events=_events(_ref("HaloEvent"), halo.MAX_EVENTS),
        user_id={"type": "string"}, session_id={"type": "string"}, user_token={"type": "string"},
    )  # fmt: skip
    identify_user = _envelope(
        ["user_id"], user_id={"type": "string"}, traits=OBJECT, context=OBJECT, user_token={"type": "string"}
    )
    identify_company = _envelope(
        ["company_id"], company_id={"type": "string"}, traits=OBJECT, context=OBJECT,
        user_id={"type": "string"}, user_token={"type": "string"},
    )  # fmt: skip
    analytics = _envelope(["events"], events=_events(_ref("XaikuEvent"), xaiku.MAX_EVENTS), pkey={"type": "string"})
    solute_body = _envelope(["batch"], batch=_events(_ref("SoluteEvent"), solute.MAX_EVENTS), sentAt={"type": "string"})
    traffical_event = {"oneOf": [_ref("Exposure"), _ref("Decision"), _ref("Track")]}
    traffical_body = _envelope(["events"], events=_events(traffical_event, traffical.MAX_EVENTS))
    forbidden = {"403": ERROR}
    traffical_op = _operation(
        "Exposure, track and decision events (key with scope sdk:write)", "bearer", traffical_body,
        TRAFFICAL_RESULT, TRAFFICAL_ERROR,
    )  # fmt: skip
    operations = {
        "halo.events": _operation("Behavioural events (Halo)", "bearer", halo_events, SUCCESS, ERROR, forbidden),
        "halo.identify_user": _operation(
            "Create or update a user (Halo)", "bearer", identify_user, SUCCESS, ERROR, forbidden
        ),
        "halo.identify_company": _operation(
            "Create or update a company (Halo)", "bearer", identify_company, SUCCESS, ERROR, forbidden
        ),
        "xaiku.analytics": _operation(
            "Analytics events (Xaiku); the key may be `pkey` in a sendBeacon body", "publicKey", analytics,
            SUCCESS, ERROR, content_types=("application/json", "text/plain"),
        ),
        "solute.batch": _operation(
            "Segment-style batch (Solute)", "apiKey", solute_body, SOLUTE_REPORT, {"anyOf": [ERROR, SOLUTE_REPORT]},
            {"403": {"anyOf": [ERROR, SOLUTE_REPORT]}},  # every event refused by identity verification
        ),
        "traffical.events": traffical_op,
        **_config_operations(),
        **_segment_operations(),
        **_posthog_operations(),
    }  # fmt: skip
    paths: dict[str, JsonSchema] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {}).update(operations[route.operation])
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sluice gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "publicKey": {"type": "apiKey", "in": "header", "name": "X-public-key"},
                "basic": {"type": "http", "scheme": "basic", "description": "the write key as user name"},
            },
        },
    }
