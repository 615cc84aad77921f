"""``POST /api/v1/analytics`` (Xaiku): header form and sendBeacon form.

The key is ``X-public-key``, or ``pkey`` inside a sendBeacon body, which arrives with any
content type and no custom headers — so the body is read as JSON whatever its Content-Type says.
All-or-nothing: an invalid event fails the request with 400 and nothing of it is kept.
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.batches import TenantMismatches, decode_body, sort_events
from services.gateway.context import PUBLISHABLE, gateway_of
from services.gateway.errors import GatewayError, json_response
from sluice.envelope import Family
from sluice.wire import xaiku

FAMILY: Family = "xaiku"


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    header_key = request.headers.get("X-public-key")
    if header_key:  # refuse a bad key before reading the body
        key = gateway.authenticate(request, header_key, kinds=PUBLISHABLE)
    body = await gateway.read_body(request, FAMILY)
    envelope = decode_body(xaiku.body_decoder, body, "a JSON object with an 'events' array")
    if not header_key:
        key = gateway.authenticate(request, envelope.pkey, kinds=PUBLISHABLE)
    if not envelope.events:
        raise GatewayError(400, "events must be a non-empty array")
    tenant = TenantMismatches(key)
    checked = sort_events(envelope.events, xaiku.event_decoder, tenant.around(xaiku.check_event), xaiku.unit_of)
    if checked.errors:
        index, reason = checked.errors[0]
        gateway.metrics.rejected(FAMILY, "invalid", len(envelope.events))
        raise GatewayError(400, f"events[{index}]: {reason}")
    await gateway.publish(gateway.raw_batch(request, FAMILY, key, body, envelope.events), checked.units)
    gateway.metrics.accepted(FAMILY, len(envelope.events))
    gateway.metrics.mismatched(FAMILY, tenant.counts)
    return json_response({"success": True})
