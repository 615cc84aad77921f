"""``POST /api/v1/analytics`` (Xaiku): header form and sendBeacon form.

The key is ``X-public-key``, or ``pkey`` inside a sendBeacon body, which arrives with any
content type and no custom headers — so the body is read as JSON whatever its Content-Type says.
A body without the header is read before any key is checked, so it is held to the browser's own
sendBeacon limit (:data:`BEACON_MAX_BYTES`), not the 1 MB a keyed request may send.
All-or-nothing: an invalid event fails the request with 400 and nothing of it is kept; so does a
request of more than :data:`~sluice.wire.xaiku.MAX_EVENTS` events.
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.batches import TenantMismatches, decode_body, sort_events
from services.gateway.context import PUBLISHABLE, gateway_of
from services.gateway.errors import GatewayError, json_response
from sluice.envelope import Family
from sluice.wire import xaiku

FAMILY: Family = "xaiku"
BEACON_MAX_BYTES = 64 * 1024
"""What browsers let ``navigator.sendBeacon`` queue (the Beacon spec's quota; 64 KiB in Chrome,
Firefox and Safari): no SDK's keyless body is larger."""


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    header_key = request.headers.get("X-public-key")
    if header_key:  # refuse a bad key before reading the body
        key = gateway.authenticate(request, header_key, kinds=PUBLISHABLE)
        body = await gateway.read_body(request, FAMILY)
    else:
        body = await gateway.read_body(request, FAMILY, BEACON_MAX_BYTES, " without an X-public-key header")
    envelope = decode_body(xaiku.body_decoder, body, "a JSON object with an 'events' array")
    if not header_key:
        key = gateway.authenticate(request, envelope.pkey, kinds=PUBLISHABLE)
    if not envelope.events:
        raise GatewayError(400, "events must be a non-empty array")
    if len(envelope.events) > xaiku.MAX_EVENTS:
        raise GatewayError(400, f"events must hold at most {xaiku.MAX_EVENTS} events")
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
