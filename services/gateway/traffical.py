"""``POST /v1/events`` and ``/v1/events/batch`` (Traffical): exposure, track, decision.

Any key kind that carries the ``sdk:write`` scope: the server SDK's ``traffical_sk_…`` and the
browser SDK's ``pk_…`` (which posts batches of about 10, and a keepalive fetch on page hide).
Partial success: ``accepted`` counts the valid events, which are made durable (``written``);
invalid ones go to the dead-letter topic. A body ``orgId``/``projectId``/``env`` other than the
key's is counted, never refused (:class:`~services.gateway.batches.TenantMismatches`).
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.batches import TenantMismatches, sort_events
from services.gateway.context import bearer, gateway_of
from services.gateway.errors import GatewayError, json_response
from sluice.envelope import Family
from sluice.wire import traffical

FAMILY: Family = "traffical"
SCOPE = "sdk:write"


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    key = gateway.authenticate(request, bearer(request), scope=SCOPE)
    body = await gateway.read_body(request, FAMILY)
    try:
        envelope = traffical.body_decoder.decode(body)
    except (ValueError, TypeError, RecursionError) as exc:  # msgspec's DecodeError, ValidationError; deep nesting
        raise GatewayError(400, traffical.EVENTS_MESSAGE) from exc
    if not 1 <= len(envelope.events) <= traffical.MAX_EVENTS:
        raise GatewayError(400, traffical.EVENTS_MESSAGE)

    received_at = gateway.clock()
    tenant = TenantMismatches(key)
    checked = sort_events(envelope.events, traffical.event_decoder, tenant.around(traffical.check_event),
                          traffical.unit_of)  # fmt: skip
    dead = checked.dead_letters(envelope.events, FAMILY, request.path, key, received_at)
    batch = None
    if checked.accepted:
        batch = gateway.raw_batch(request, FAMILY, key, body, checked.accepted, checked.indexes, received_at)
    await gateway.publish(batch, checked.units, dead)
    gateway.metrics.accepted(FAMILY, len(checked.accepted))
    gateway.metrics.rejected(FAMILY, "invalid", len(checked.errors))
    gateway.metrics.mismatched(FAMILY, tenant.counts)
    return json_response({"accepted": len(checked.accepted), "written": len(checked.accepted)})
