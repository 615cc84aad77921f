"""PostHog's capture API: ``/batch``, ``/e``, ``/i/v0/e``, ``/capture``, ``/track``, ``/engage``
(trailing slash or not; POST or GET), and the start-up calls posthog-js makes beside them.

All or nothing, as PostHog's capture: an event without a name or a ``distinct_id`` fails the
request with 400 and nothing of it is kept. The project token (a Sluice key, ``phc_…`` from
``sluice keys create --sdk posthog``) is the batch's ``api_key``/``token``, else the events'
(which must agree); a personal API key (``phx_…``) is refused with 401 before any lookup.
``beacon=1`` answers 204. The token is taken out of every event forwarded (posthog-js puts it in
each event's properties): keys are never stored. The body's ``sent_at``, else the
``_`` parameter (ms), is the client's clock for skew correction (in the worker).

Identity verification: where the org has it on, an event that changes a person (``$identify``,
``$set``, ``$set_once``, ``$create_alias``) from a publishable token fails the request with 403
(PostHog's events carry no proof); use a secret key on servers.

The start-up calls answer minimal valid bodies (``config.js`` a script that sets the same configuration):
no feature flags, no remote configuration — what
a project with none configured gets, so the SDK runs as usual and sends its events.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from services.gateway.batches import decode_body
from services.gateway.context import gateway_of, reserve
from services.gateway.errors import GatewayError, json_response
from services.gateway.posthog_body import payload
from sluice.envelope import Family
from sluice.wire import posthog

FAMILY: Family = "posthog"
CAPTURE_PATHS = ("/batch", "/e", "/i/v0/e", "/capture", "/track", "/engage")
FLAGS_PATHS = ("/flags", "/decide")
OK = msgspec.json.encode({"status": 1})
CONFIG = {
    "supportedCompression": ["gzip", "gzip-js"],
    "sessionRecording": False,
    "surveys": False,
    "heatmaps": False,
    "hasFeatureFlags": False,
    "siteApps": [],
    "toolbarParams": {},
    "isAuthenticated": False,
    "autocaptureExceptions": False,
    "capturePerformance": False,
    "defaultIdentifiedOnly": True,
}
FLAGS = {
    **CONFIG,
    "flags": {},
    "featureFlags": {},
    "featureFlagPayloads": {},
    "errorsWhileComputingFlags": False,
    "quotaLimited": [],
}
"""``/flags`` (v2: ``flags``) and ``/decide`` (``featureFlags``) in one body: no flags."""


async def capture(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    query = request.query
    body = await gateway.read_bytes(request, FAMILY) if request.method == "POST" else b""
    text = payload(body, query, request.content_type, gateway.settings.max_body_bytes)
    if text is not body:
        reserve(request, len(body) + len(text))  # the decompressed payload is held too
    parsed = decode_body(posthog.body_decoder, text, "an event, an array of events or {batch: [...]}")
    if isinstance(parsed, list):
        raws, token, sent_at = parsed, None, None
    else:
        raws = parsed.batch if parsed.batch is not None else [msgspec.Raw(text)]
        token, sent_at = parsed.api_key or parsed.token, parsed.sent_at
    if not raws:
        raise GatewayError(400, "The batch holds no events")
    route = request.path
    events = [_event(raw, i, route) for i, raw in enumerate(raws)]
    key = gateway.authenticate(request, _token(token, events))
    org = gateway.registry.org(key.org_id)
    if org.identity_verification and key.kind != "secret":
        for event in events:
            if refused := gateway.identity_refusal(key, posthog.named_users(event, route), None):
                gateway.metrics.rejected(FAMILY, "unverified", len(events))
                raise GatewayError(403, refused)
    received_at = gateway.clock()
    forwarded = [_without_token(raw, event) for raw, event in zip(raws, events, strict=True)]
    client_clock = sent_at or _sent_at(query.get("_"))
    batch = gateway.raw_batch(request, FAMILY, key, text, forwarded, None, received_at, client_clock)
    await gateway.publish(batch, [posthog.distinct_id(event) for event in events])
    gateway.metrics.accepted(FAMILY, len(events))
    if query.get("beacon") == "1":
        return web.Response(status=204)
    return web.Response(body=OK, content_type="application/json")


def _event(raw: msgspec.Raw, index: int, route: str) -> posthog.PostHogEvent:
    try:
        event = posthog.event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise GatewayError(400, f"Invalid event at index {index}: {exc}") from None
    except RecursionError:
        raise GatewayError(400, f"Event at index {index} nests too deeply") from None
    if reason := posthog.check(event, route):
        raise GatewayError(400, f"Invalid event at index {index}: {reason}")
    return event


TOKEN_FIELDS = ("token", "$token", "api_key")


def _without_token(raw: msgspec.Raw, event: posthog.PostHogEvent) -> msgspec.Raw:
    """The event as sent, less the project token where it carries one (posthog-js puts it in every
    event's properties): a key is never stored."""
    properties = event.properties
    if not (event.token or event.dollar_token or event.api_key or (properties and "token" in properties)):
        return raw
    fields = msgspec.json.decode(raw)
    for name in TOKEN_FIELDS:
        fields.pop(name, None)
    if isinstance(fields.get("properties"), dict):
        fields["properties"].pop("token", None)
    return msgspec.Raw(msgspec.json.encode(fields))


def _token(batch_token: str | None, events: list[posthog.PostHogEvent]) -> str:
    """The request's project token: the batch's, else the one its events share."""
    token = batch_token
    if token is None:
        tokens = {t for t in map(posthog.token_of, events) if t}
        if len(tokens) > 1:
            raise GatewayError(400, "The events of one request carry different tokens")
        token = tokens.pop() if tokens else None
    if not token:
        raise GatewayError(401, "Missing project token (api_key or token)")
    if token.startswith(posthog.PERSONAL_KEY_PREFIX):
        raise GatewayError(401, "A personal API key (phx_) cannot send events: use the project token")
    return token


def _sent_at(milliseconds: str | None) -> str | None:
    """The ``_`` parameter (posthog-js: the client's time in ms) as ISO 8601."""
    if not milliseconds or not milliseconds.isdigit() or len(milliseconds) > 15:
        return None
    return datetime.fromtimestamp(int(milliseconds) / 1000, UTC).isoformat()


async def flags(request: web.Request) -> web.Response:
    """``/flags`` and ``/decide``: no feature flags (Sluice serves none)."""
    return json_response(FLAGS)


async def remote_config(request: web.Request) -> web.Response:
    """``GET /array/{token}/config``: the remote configuration of a project with nothing on."""
    return json_response(CONFIG)


CONFIG_JS = (
    "window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n"
    "window._POSTHOG_REMOTE_CONFIG[%s] = {config: %s, siteApps: []};\n"
)


async def remote_config_js(request: web.Request) -> web.Response:
    """``GET /array/{token}/config.js``, which posthog-js loads as a script first (then the JSON)."""
    token = msgspec.json.encode(request.match_info["token"]).decode()
    script = CONFIG_JS % (token, msgspec.json.encode(CONFIG).decode())
    return web.Response(text=script, content_type="application/javascript")
